package operatorapi

import (
	"net/http"
	"strconv"

	"github.com/meshanics/meshanics/internal/errdefs"
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
