package operatorapi

import (
	"net/http"
	"strconv"

	"github.com/meshanics/meshanics/internal/errdefs"
	"github.com/meshanics/meshanics/internal/server/httpjson"
	"github.com/meshanics/meshanics/internal/server/store"
)

// Pagination of SPEC §8.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// Page is the limit and offset of a list request, already validated and
// clamped.
type Page struct {
	Limit  int
	Offset int
}

// parsePage reads limit (default 50, over 200 clamped to 200) and offset
// (default 0) from the query. Non-numbers, limit < 1 and offset < 0 are
// client errors.
func parsePage(r *http.Request) (Page, error) {
	p := Page{Limit: DefaultLimit}
	q := r.URL.Query()
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return Page{}, errdefs.Invalid("limit must be a positive integer")
		}
		p.Limit = min(n, MaxLimit)
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return Page{}, errdefs.Invalid("offset must be a non-negative integer")
		}
		p.Offset = n
	}
	return p, nil
}

// List is the body of every list response.
type List[T any] struct {
	Items  []T `json:"items"`
	Total  int `json:"total"`
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
}

// newList builds a list body; items is never encoded as null.
func newList[T any](items []T, total int, p Page) List[T] {
	if items == nil {
		items = []T{}
	}
	return List[T]{Items: items, Total: total, Limit: p.Limit, Offset: p.Offset}
}

// writePage answers a list request: it parses the page, reads it with list
// (which checks the request's other parameters first, if any) and writes the
// list body.
func writePage[T any](w http.ResponseWriter, r *http.Request, list func(store.Page) ([]T, int, error)) error {
	pg, err := parsePage(r)
	if err != nil {
		return err
	}
	items, total, err := list(store.Page{Limit: pg.Limit, Offset: pg.Offset})
	if err != nil {
		return err
	}
	httpjson.Write(w, http.StatusOK, newList(items, total, pg))
	return nil
}

// convert maps items to their REST shape.
func convert[S, T any](items []S, f func(S) T) []T {
	out := make([]T, len(items))
	for i, it := range items {
		out[i] = f(it)
	}
	return out
}
