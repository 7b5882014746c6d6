//go:build !linux

package maildir

import (
	"errors"
	"os"
)

// openUnnamed is unsupported outside Linux: the sink writes named files
// in tmp/ instead.
func openUnnamed(string) (*os.File, error) { return nil, errors.ErrUnsupported }

func linkUnnamed(*os.File, string) error { return errors.ErrUnsupported }
