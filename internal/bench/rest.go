package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
)

// operator is a minimal client of the operator REST API (SPEC §8) with
// the admin API key meshanics-server init printed.
type operator struct {
	url    string
	apiKey string
	hc     *http.Client
}

func newOperator(webURL, apiKey string, caPEM []byte) *operator {
	return &operator{url: webURL, apiKey: apiKey, hc: httpClient(caPEM, nil)}
}

// call sends body (JSON) and decodes a 2xx answer into out.
func (o *operator) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, o.url+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return o.do(req, out)
}

func (o *operator) do(req *http.Request, out any) error {
	req.Header.Set("Authorization", "Bearer "+o.apiKey)
	resp, err := o.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: HTTP %d: %s", req.Method, req.URL.Path, resp.StatusCode, tailString(string(b), 500))
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// token mints a bulk enrollment token.
func (o *operator) token(ctx context.Context, uses int) (string, error) {
	t, _, err := o.tokenPin(ctx, uses)
	return t, err
}

// tokenPin mints a bulk enrollment token and returns the CA pin with it.
func (o *operator) tokenPin(ctx context.Context, uses int) (token, caPin string, err error) {
	var out struct {
		Token string `json:"token"`
		CAPin string `json:"ca_pin"`
	}
	err = o.call(ctx, http.MethodPost, "/api/v1/enrollment-tokens", map[string]any{"ttl_seconds": 6 * 3600, "uses": max(uses, 1)}, &out)
	return out.Token, out.CAPin, err
}

type publishedArtifact struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	Kind       string `json:"kind"`
	TargetPath string `json:"target_path"`
	SHA256     string `json:"sha256"`
	Length     int64  `json:"length"`
}

// publishModel uploads file as model name@version (multipart, streamed).
func (o *operator) publishModel(ctx context.Context, name, version, file string) (publishedArtifact, error) {
	f, err := os.Open(file)
	if err != nil {
		return publishedArtifact{}, err
	}
	defer f.Close()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		meta, _ := json.Marshal(map[string]any{"kind": "model", "name": name, "version": version,
			"file_name": filepath.Base(file), "manifest": map[string]any{"framework": "onnx"}})
		err := func() error {
			w, err := mw.CreateFormField("metadata")
			if err != nil {
				return err
			}
			if _, err := w.Write(meta); err != nil {
				return err
			}
			if w, err = mw.CreateFormFile("file", filepath.Base(file)); err != nil {
				return err
			}
			if _, err := io.CopyBuffer(w, f, make([]byte, 1<<20)); err != nil {
				return err
			}
			return mw.Close()
		}()
		pw.CloseWithError(err)
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url+"/api/v1/artifacts", pr)
	if err != nil {
		return publishedArtifact{}, err
	}
	req.Header.Set("Content-Type", mw.FormDataContentType())
	var out publishedArtifact
	hc := *o.hc
	hc.Timeout = 0 // a large upload takes as long as it takes
	req.Header.Set("Authorization", "Bearer "+o.apiKey)
	resp, err := hc.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusCreated {
		return out, fmt.Errorf("publish %s@%s: HTTP %d: %s", name, version, resp.StatusCode, tailString(string(b), 500))
	}
	return out, json.Unmarshal(b, &out)
}
