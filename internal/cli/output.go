package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// writeRaw prints a REST response body unchanged (-o json), adding a final
// newline only when the body has none.
func (a *app) writeRaw(body []byte) error {
	if len(body) == 0 {
		return nil
	}
	if _, err := a.stdout.Write(body); err != nil {
		return err
	}
	if body[len(body)-1] != '\n' {
		_, err := io.WriteString(a.stdout, "\n")
		return err
	}
	return nil
}

// decodeBody decodes a JSON response for table output.
func decodeBody(resp *response, v any) error {
	if err := json.Unmarshal(resp.body, v); err != nil {
		return fmt.Errorf("unexpected response from server: %w", err)
	}
	return nil
}

// table returns a tabwriter on stdout; call Flush when done.
func (a *app) table() *tabwriter.Writer {
	return tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
}

// listFooter says where a page ends when there are more items.
func (a *app) listFooter(shown, total, offset int) {
	if offset+shown < total {
		fmt.Fprintf(a.stdout, "(%d-%d of %d; next page: -offset %d)\n", offset+1, offset+shown, total, offset+shown)
	}
}

// fmtTime renders a timestamp for tables; zero is "-".
func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// fmtTags renders k=v,… sorted by key; empty is "-".
func fmtTags(tags map[string]string) string {
	if len(tags) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + tags[k]
	}
	return strings.Join(parts, ",")
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// list is the body of every list response (SPEC §8).
type list[T any] struct {
	Items  []T `json:"items"`
	Total  int `json:"total"`
	Limit  int `json:"limit"`
	Offset int `json:"offset"`
}

// pageFlags adds -limit and -offset to fs.
type pageFlags struct{ limit, offset int }

func (p *pageFlags) add(fsVar interface {
	IntVar(*int, string, int, string)
}) {
	fsVar.IntVar(&p.limit, "limit", 0, "items per page (server default 50, at most 200)")
	fsVar.IntVar(&p.offset, "offset", 0, "items to skip")
}

func (p *pageFlags) query(q map[string][]string) {
	if p.limit > 0 {
		q["limit"] = []string{fmt.Sprint(p.limit)}
	}
	if p.offset > 0 {
		q["offset"] = []string{fmt.Sprint(p.offset)}
	}
}

// parsePaged adds -limit and -offset to fs, parses args (min to max
// positional arguments) and returns them with the page query.
func parsePaged(fs *flag.FlagSet, args []string, min, max int) ([]string, url.Values, error) {
	var pf pageFlags
	pf.add(fs)
	pos, err := parseArgs(fs, args, min, max)
	if err != nil {
		return nil, nil, err
	}
	q := url.Values{}
	pf.query(q)
	return pos, q, nil
}

// printList fetches one page of the list at path and prints the body
// unchanged (-o json) or as a table: header, then row(item) for each item.
// Rows and header are tab-separated columns.
func printList[T any](ctx context.Context, a *app, path string, q url.Values, header string, row func(T) string) error {
	c, err := a.api()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, http.MethodGet, path, q, nil)
	if err != nil {
		return err
	}
	if a.jsonOut() {
		return a.writeRaw(resp.body)
	}
	var l list[T]
	if err := decodeBody(resp, &l); err != nil {
		return err
	}
	tw := a.table()
	fmt.Fprintln(tw, header)
	for _, it := range l.Items {
		fmt.Fprintln(tw, row(it))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	a.listFooter(len(l.Items), l.Total, l.Offset)
	return nil
}

// printObject sends one request and prints the response body unchanged
// (-o json) or decoded into a T and rendered by show.
func printObject[T any](ctx context.Context, a *app, method, path string, body any, show func(T) error) error {
	c, err := a.api()
	if err != nil {
		return err
	}
	resp, err := c.do(ctx, method, path, nil, body)
	if err != nil {
		return err
	}
	return printResponse(a, resp, show)
}

// printResponse prints resp's body unchanged (-o json) or decoded into a T
// and rendered by show.
func printResponse[T any](a *app, resp *response, show func(T) error) error {
	if a.jsonOut() {
		return a.writeRaw(resp.body)
	}
	var v T
	if err := decodeBody(resp, &v); err != nil {
		return err
	}
	return show(v)
}

// deleteObject sends DELETE path and, for table output, prints done.
func deleteObject(ctx context.Context, a *app, path, done string) error {
	c, err := a.api()
	if err != nil {
		return err
	}
	if _, err := c.do(ctx, http.MethodDelete, path, nil, nil); err != nil {
		return err
	}
	if !a.jsonOut() {
		fmt.Fprintln(a.stdout, done)
	}
	return nil
}
