package receiver_test

import (
	"log"
	"net/http"
	"os"
	"path/filepath"

	"github.com/pophook/pophook/docs/receiver"
)

// A receiver that writes each message to a directory, one file per
// delivery id, and answers only once the file is safely on disk.
func ExampleHandler() {
	secret := os.Getenv("WEBHOOK_SECRET") // the sink's POPHOOK_SINK_<NAME>_SECRET
	dir := "/var/spool/pophook-in"

	store := func(id string, payload []byte) error {
		f, err := os.CreateTemp(dir, ".incoming-*")
		if err != nil {
			return err
		}
		defer os.Remove(f.Name()) // fails harmlessly once renamed
		if _, err := f.Write(payload); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil { // on disk before we say 2xx
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		// Named by the id, a repeat after a receiver restart replaces the
		// file with the same message instead of adding a second one.
		return os.Rename(f.Name(), filepath.Join(dir, id))
	}

	http.Handle("POST /hooks/mail", receiver.Handler(secret, store))
	log.Fatal(http.ListenAndServe(":8080", nil))
}
