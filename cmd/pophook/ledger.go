package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pophook/pophook/internal/atomicfile"
	"github.com/pophook/pophook/internal/config"
	"github.com/pophook/pophook/state"
)

// pophook ledger works whether or not the daemon runs. bbolt's lock keeps
// a second process out of ledger.db, so when the daemon holds it the
// command asks the daemon, over a small control API on its loopback HTTP
// listener, to do the same operation on its open ledger. The API takes a
// token the daemon writes into the data dir (0600) at start: whoever may
// read the ledger file may use it, nobody else.

const ledgerUsage = `usage:
  pophook ledger list                     accounts with their counts
  pophook ledger show ACCOUNT UIDL        one message's record
  pophook ledger retry ACCOUNT UIDL [SINK] offer a rejected message again at the next run
  pophook ledger forget ACCOUNT UIDL      drop a record: the message is fetched and delivered again
  pophook ledger export                   every record as JSON lines
Add --json to list and show for JSON`

// controlTokenFile is the control API's token in the data dir.
const controlTokenFile = "control.token"

// ledgerRequest is one operation, the same locally and over the API.
type ledgerRequest struct {
	Op      string `json:"op"` // list, show, retry, forget, export
	Account string `json:"account,omitempty"`
	UIDL    string `json:"uidl,omitempty"`
	Sink    string `json:"sink,omitempty"`
}

// ledgerReply is what an operation gives back.
type ledgerReply struct {
	Accounts []accountCounts `json:"accounts,omitempty"` // list
	Entries  []*state.Entry  `json:"entries,omitempty"`  // show
	Changed  int             `json:"changed,omitempty"`  // retry, forget
	Error    string          `json:"error,omitempty"`
}

type accountCounts struct {
	Account string `json:"account"` // name in the configuration, or "host user" for one no longer configured
	state.Counts
}

// ledgerService runs operations on an open ledger.
type ledgerService struct {
	l        *state.Ledger
	accounts []config.Account
}

func (s *ledgerService) account(name string) (*config.Account, error) {
	i := slices.IndexFunc(s.accounts, func(a config.Account) bool { return a.Name == name })
	if i < 0 {
		return nil, fmt.Errorf("no account %q in POPHOOK_ACCOUNTS", name)
	}
	return &s.accounts[i], nil
}

func (s *ledgerService) do(req ledgerRequest, export io.Writer) (ledgerReply, error) {
	switch req.Op {
	case "list":
		return s.list()
	case "export":
		return ledgerReply{}, s.export(export)
	case "show", "retry", "forget":
	default:
		return ledgerReply{}, fmt.Errorf("unknown ledger operation %q", req.Op)
	}
	a, err := s.account(req.Account)
	if err != nil {
		return ledgerReply{}, err
	}
	acct := s.l.Account(state.AccountID(a.Host, a.Username))
	found, err := acct.Find(req.UIDL)
	if err != nil {
		return ledgerReply{}, err
	}
	if len(found) == 0 {
		return ledgerReply{}, fmt.Errorf("account %s has no record of a message %q", a.Name, req.UIDL)
	}
	if req.Op == "show" {
		return ledgerReply{Entries: found}, nil
	}
	changed := 0
	for _, e := range found {
		err := acct.Update(e.ID(), func(cur *state.Entry) *state.Entry {
			if cur == nil {
				return nil
			}
			if req.Op == "forget" {
				changed++
				return nil
			}
			for name, st := range cur.Sinks {
				if st.Permanent && (req.Sink == "" || req.Sink == name) {
					st.Permanent, st.NextAttempt = false, time.Time{}
					changed++
				}
			}
			return cur
		})
		if err != nil {
			return ledgerReply{}, err
		}
	}
	if changed == 0 && req.Op == "retry" {
		return ledgerReply{}, fmt.Errorf("message %q of account %s has no rejection to retry", req.UIDL, a.Name)
	}
	return ledgerReply{Changed: changed}, nil
}

func (s *ledgerService) list() (ledgerReply, error) {
	ids, err := s.l.Accounts()
	if err != nil {
		return ledgerReply{}, err
	}
	var out []accountCounts
	for _, id := range ids {
		name, sinks := strings.ReplaceAll(id, "\x00", " "), []string(nil)
		for _, a := range s.accounts {
			if state.AccountID(a.Host, a.Username) == id {
				name, sinks = a.Name, a.Sinks
			}
		}
		c, err := s.l.Account(id).Count(sinks)
		if err != nil {
			return ledgerReply{}, err
		}
		out = append(out, accountCounts{Account: name, Counts: c})
	}
	slices.SortFunc(out, func(a, b accountCounts) int { return strings.Compare(a.Account, b.Account) })
	return ledgerReply{Accounts: out}, nil
}

func (s *ledgerService) export(w io.Writer) error {
	ids, err := s.l.Accounts()
	if err != nil {
		return err
	}
	enc := json.NewEncoder(w)
	for _, id := range ids {
		name := strings.ReplaceAll(id, "\x00", " ")
		for _, a := range s.accounts {
			if state.AccountID(a.Host, a.Username) == id {
				name = a.Name
			}
		}
		err := s.l.Account(id).Each(func(e *state.Entry) error {
			return enc.Encode(struct {
				Account string       `json:"account"`
				Entry   *state.Entry `json:"entry"`
			}{name, e})
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// ledgerCommand is `pophook ledger ...`.
func ledgerCommand(ctx context.Context, cfg *config.Config, args []string, stdout io.Writer) error {
	asJSON := slices.Contains(args, "--json")
	args = slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--json" })
	if len(args) == 0 {
		return &exitError{code: 2, err: errors.New(ledgerUsage)}
	}
	req := ledgerRequest{Op: args[0]}
	want := map[string][2]int{"list": {1, 1}, "export": {1, 1}, "show": {3, 3}, "forget": {3, 3}, "retry": {3, 4}}[req.Op]
	if want == [2]int{} || len(args) < want[0] || len(args) > want[1] {
		return &exitError{code: 2, err: errors.New(ledgerUsage)}
	}
	if len(args) >= 3 {
		req.Account, req.UIDL = args[1], args[2]
	}
	if len(args) == 4 {
		req.Sink = args[3]
	}

	path := filepath.Join(cfg.DataDir, state.FileName)
	if _, err := os.Stat(path); err != nil {
		return fmt.Errorf("no ledger at %s (has pophook run with this POPHOOK_DATA_DIR?): %w", path, err)
	}
	var reply ledgerReply
	l, err := state.Open(cfg.DataDir, 300*time.Millisecond)
	switch {
	case err == nil:
		defer l.Close()
		svc := &ledgerService{l: l, accounts: withKeptServers(cfg.DataDir, cfg.Accounts)}
		reply, err = svc.do(req, stdout)
	case errors.Is(err, state.ErrInUse):
		reply, err = askDaemon(ctx, cfg, req, stdout)
	}
	if err != nil {
		return err
	}
	return printLedger(stdout, req, reply, asJSON)
}

func printLedger(w io.Writer, req ledgerRequest, r ledgerReply, asJSON bool) error {
	switch {
	case req.Op == "export":
		return nil
	case asJSON || req.Op == "show":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if req.Op == "show" {
			return enc.Encode(r.Entries)
		}
		if asJSON {
			return enc.Encode(r.Accounts)
		}
	case req.Op == "list":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "ACCOUNT\tKEPT\tDELETED\tPENDING\tFAILING\tREJECTED\tTOO LARGE\tSKIPPED\tSUSPECT")
		for _, a := range r.Accounts {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", a.Account, a.Delivered, a.Deleted, a.Pending, a.Failing,
				a.Rejected, a.TooLarge, a.Skipped, a.Suspect)
		}
		return tw.Flush()
	case req.Op == "retry":
		fmt.Fprintf(w, "%d rejection(s) cleared; message %s of account %s is offered again at the next run\n", r.Changed, req.UIDL, req.Account)
	case req.Op == "forget":
		fmt.Fprintf(w, "%d record(s) dropped; message %s of account %s will be fetched and delivered again at the next run\n", r.Changed, req.UIDL, req.Account)
	}
	return nil
}

// askDaemon sends req to the daemon that holds the ledger.
func askDaemon(ctx context.Context, cfg *config.Config, req ledgerRequest, export io.Writer) (ledgerReply, error) {
	if cfg.HTTPAddr == "" {
		return ledgerReply{}, errors.New("the ledger is in use by a running pophook and POPHOOK_HTTP_ADDR is empty, so it cannot be asked: set it, or stop the daemon")
	}
	token, err := os.ReadFile(filepath.Join(cfg.DataDir, controlTokenFile))
	if err != nil {
		return ledgerReply{}, fmt.Errorf("the ledger is in use by a running pophook, and its control token cannot be read: %w", err)
	}
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+loopbackAddr(cfg.HTTPAddr)+"/api/ledger", bytes.NewReader(body))
	if err != nil {
		return ledgerReply{}, err
	}
	hreq.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return ledgerReply{}, fmt.Errorf("the ledger is in use by a running pophook, which did not answer on %s: %w", cfg.HTTPAddr, err)
	}
	defer resp.Body.Close()
	if req.Op == "export" && resp.StatusCode == http.StatusOK {
		_, err := io.Copy(export, resp.Body)
		return ledgerReply{}, err
	}
	var reply ledgerReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(&reply); err != nil {
		return ledgerReply{}, fmt.Errorf("the daemon answered HTTP %d: %w", resp.StatusCode, err)
	}
	if reply.Error != "" {
		return ledgerReply{}, errors.New(reply.Error)
	}
	return reply, nil
}

// loopbackAddr turns a listen address into one to connect to: an empty
// or unspecified host means this machine.
func loopbackAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port)
}

// controlAPI serves ledger operations to `pophook ledger` on this machine.
type controlAPI struct {
	svc   *ledgerService
	token string
}

// newControlAPI writes a fresh token into the data dir.
func newControlAPI(dataDir string, svc *ledgerService) (*controlAPI, error) {
	b := make([]byte, 32)
	rand.Read(b)
	token := hex.EncodeToString(b)
	path := filepath.Join(dataDir, controlTokenFile)
	if err := atomicfile.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("control token: %w", err)
	}
	return &controlAPI{svc: svc, token: token}, nil
}

func (c *controlAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		http.Error(w, "the control API answers only on this machine", http.StatusForbidden)
		return
	}
	got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if subtle.ConstantTimeCompare([]byte(got), []byte(c.token)) != 1 {
		http.Error(w, "missing or wrong control token", http.StatusUnauthorized)
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/api/ledger" {
		http.NotFound(w, r)
		return
	}
	var req ledgerRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if req.Op == "export" {
		w.Header().Set("Content-Type", "application/x-ndjson")
		bw := bufio.NewWriter(w)
		if _, err := c.svc.do(req, bw); err != nil {
			return // the client sees a cut stream
		}
		bw.Flush()
		return
	}
	reply, err := c.svc.do(req, nil)
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		w.WriteHeader(http.StatusUnprocessableEntity)
		reply = ledgerReply{Error: err.Error()}
	}
	json.NewEncoder(w).Encode(reply)
}
