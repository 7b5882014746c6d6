package worker

import (
	"context"
	"fmt"

	"github.com/pophook/pophook/state"
	"github.com/pophook/pophook/worker/pop3"
)

// deleteAndQuit sends DELE for every delivered message not kept, QUITs,
// and records the deletions once QUIT has confirmed them.
func (r *run) deleteAndQuit() error {
	ctx, cancel := context.WithTimeout(r.ctx, wrapUpTimeout)
	defer cancel()
	var nums []int
	for _, p := range r.dele {
		nums = append(nums, p.Info.Num)
	}
	var errs []error
	if len(nums) > 0 {
		var err error
		errs, err = r.c.DeleMany(ctx, nums)
		if err != nil {
			return fmt.Errorf("account %s: DELE: %w", r.Account.Name, err)
		}
	}
	if err := r.c.Quit(ctx); err != nil {
		// The server may have applied the deletions and lost only its
		// answer: the entries are not marked deleted, so the next listing
		// says which are gone, and what is still there is deleted then.
		return fmt.Errorf("account %s: QUIT (the deletions may not have been applied; the next run sees): %w", r.Account.Name, err)
	}
	now := r.now()
	var deleted []*state.Entry
	for i, p := range r.dele {
		if errs[i] != nil {
			r.problem(Problem{Kind: ProblemDele, UIDL: p.Entry.UIDL, Err: errs[i]})
			continue
		}
		p.Entry.DeletedAt = now
		deleted = append(deleted, p.Entry)
	}
	r.res.Deleted += len(deleted)
	if len(deleted) > 0 {
		if err := r.ledger.Put(deleted...); err != nil {
			// Harmless: the messages are gone, so they are not listed
			// again and the entries will be pruned.
			r.log.Warn("could not record deletions", "err", err)
		}
	}
	return nil
}

// quit ends a session that will do nothing more.
func (r *run) quit() {
	ctx, cancel := context.WithTimeout(r.ctx, wrapUpTimeout)
	defer cancel()
	r.c.Quit(ctx)
}

// prune ages the ledger entries of messages the complete listing no longer
// holds (see state.Account.Prune).
func (r *run) prune(list []pop3.MessageInfo) error {
	listed := r.listed // as the plan matched them
	if listed == nil {
		_, _, listed = listingIDs(list)
	}
	var n int
	var err error
	if r.known != nil {
		n, err = r.ledger.PruneKnown(r.known, listed, r.now(), pruneGrace)
	} else {
		n, err = r.ledger.Prune(listed, r.now(), pruneGrace)
	}
	if err != nil {
		return fmt.Errorf("account %s: ledger: %w", r.Account.Name, err)
	}
	if n > 0 {
		r.log.Debug("pruned ledger entries of messages gone from the server", "entries", n)
	}
	return nil
}
