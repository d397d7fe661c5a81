package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/pprof"
	"time"
)

// startProfiles starts a CPU profile of this process (selfFile) and of the
// server's pprof endpoint for d (serverFile); stop waits for both.
func startProfiles(ctx context.Context, selfFile, serverFile, pprofAddr string, delay, d time.Duration) (stop func() error, err error) {
	var selfOut *os.File
	if selfFile != "" {
		if selfOut, err = os.Create(selfFile); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(selfOut); err != nil {
			selfOut.Close()
			return nil, err
		}
	}
	serverDone := make(chan error, 1)
	if serverFile != "" && pprofAddr != "" {
		go func() {
			time.Sleep(delay)
			err := fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", pprofAddr, max(1, int(d.Seconds()))), serverFile)
			if err == nil { // and where the memory is, at the end of the window
				err = fetchProfile(ctx, fmt.Sprintf("http://%s/debug/pprof/heap", pprofAddr), serverFile+".heap")
			}
			serverDone <- err
		}()
	} else {
		serverDone <- nil
	}
	return func() error {
		if selfOut != nil {
			pprof.StopCPUProfile()
			selfOut.Close()
		}
		return <-serverDone
	}, nil
}

func fetchProfile(ctx context.Context, url, file string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("server profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("server profile: HTTP %d", resp.StatusCode)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
