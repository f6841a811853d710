package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/mcp-ssh-gateway/mcp-ssh-gateway/test/localfleet"
)

// rssSampleEvery is how often the gateway's VmRSS is read during the large upload.
const rssSampleEvery = 20 * time.Millisecond

// transferReport is what the file-path rows measured (upload_file with source_path).
type transferReport struct {
	bytes      int64
	mcp        []float64     // MiB/s per source_path upload
	scp        []float64     // MiB/s per scp + sync of the same file
	cp         []float64     // MiB/s per local cp + sync of the same file over the last copy, in place
	scpNew     []float64     // MiB/s per scp + sync to a new name, renamed over the destination
	cpNew      []float64     // the same with cp: the floor, written the way upload_file writes
	mcpCPU     time.Duration // machine-wide busy CPU time of all the source_path uploads
	scpCPU     time.Duration // the same for all the scp + sync runs
	cpCPU      time.Duration // the same for all the cp + sync runs
	cpNewCPU   time.Duration // the same for the cp runs to a new name
	bigBytes   int64         // size of the large upload, 0 when skipped
	bigRate    float64       // its MiB/s
	bigBefore  int64         // gateway VmRSS just before it
	bigPeak    int64         // highest gateway VmRSS sampled during it
	bigSamples int
}

// measureTransfers uploads a transferMiB file from the gateway's FILES_DIR with source_path,
// uploadRuns times, the same file with scp + sync, and copies it locally with cp + sync (the
// floor: what the disk allows with no network and no hashing), the three taking turns so that
// the shared machine's slow and fast spells (and the disk's writeback) fall on all alike; then, if
// bigMiB > 0, one bigMiB upload with source_path while the gateway's resident memory is
// sampled. It runs before the base64 content uploads, so the gateway's heap has not been grown
// by them.
func measureTransfers(ctx context.Context, o options, r *report, gw *localfleet.Gateway, fleet *localfleet.Layout, srv *sshd, filesDir string) error {
	t := &r.transfer
	t.bytes = int64(o.transferMiB) << 20
	name := "transfer.bin"
	src := filepath.Join(filesDir, name)
	sum, err := writeRandomFile(src, t.bytes)
	if err != nil {
		return err
	}
	defer os.Remove(src)
	mcpDst := filepath.Join(fleet.UploadDir, name)
	defer os.Remove(mcpDst)
	scpDst := filepath.Join(filepath.Dir(filesDir), "scp-"+name)
	defer os.Remove(scpDst)
	cpDst := filepath.Join(filepath.Dir(filesDir), "cp-"+name) // the same filesystem as scpDst
	defer os.Remove(cpDst)
	args := map[string]any{"edge": edgeName, "path": mcpDst, "source_path": name, "overwrite": true}

	if srv == nil {
		slog.Info("measuring upload_file with source_path and cp + sync of the same file, taking turns", "mib", o.transferMiB, "runs", o.uploadRuns)
	} else {
		slog.Info("measuring upload_file with source_path, scp + sync and cp + sync of the same file, taking turns", "mib", o.transferMiB, "runs", o.uploadRuns)
	}
	for i := range o.uploadRuns {
		var rate float64
		cpu, err := busyDuring(func() (err error) {
			rate, err = sourcePathUpload(ctx, gw, args, t.bytes, sum)
			return err
		})
		if err != nil {
			return fmt.Errorf("source_path upload %d: %w", i+1, err)
		}
		t.mcp, t.mcpCPU = append(t.mcp, rate), t.mcpCPU+cpu
		cpu, err = busyDuring(func() (err error) {
			rate, err = cpSync(ctx, src, cpDst, t.bytes, false)
			return err
		})
		if err != nil {
			return fmt.Errorf("cp %d: %w", i+1, err)
		}
		t.cp, t.cpCPU = append(t.cp, rate), t.cpCPU+cpu
		cpu, err = busyDuring(func() (err error) {
			rate, err = cpSync(ctx, src, cpDst, t.bytes, true)
			return err
		})
		if err != nil {
			return fmt.Errorf("cp to a new name %d: %w", i+1, err)
		}
		t.cpNew, t.cpNewCPU = append(t.cpNew, rate), t.cpNewCPU+cpu
		if srv == nil {
			continue
		}
		cpu, err = busyDuring(func() (err error) {
			rate, err = scpSync(ctx, srv, src, scpDst, t.bytes, false)
			return err
		})
		if err != nil {
			return fmt.Errorf("scp %d: %w", i+1, err)
		}
		t.scp, t.scpCPU = append(t.scp, rate), t.scpCPU+cpu
		if rate, err = scpSync(ctx, srv, src, scpDst, t.bytes, true); err != nil {
			return fmt.Errorf("scp to a new name %d: %w", i+1, err)
		}
		t.scpNew = append(t.scpNew, rate)
	}
	os.Remove(src)
	os.Remove(mcpDst)
	os.Remove(scpDst)
	os.Remove(cpDst)

	if o.bigMiB == 0 {
		return nil
	}
	t.bigBytes = int64(o.bigMiB) << 20
	bigName := "big.bin"
	bigSrc := filepath.Join(filesDir, bigName)
	bigSum, err := writeRandomFile(bigSrc, t.bigBytes)
	if err != nil {
		return err
	}
	defer os.Remove(bigSrc)
	defer os.Remove(filepath.Join(fleet.UploadDir, bigName))
	if t.bigBefore, err = vmRSS(r.gatewayPID); err != nil {
		return err
	}
	slog.Info("measuring the gateway's memory during one large source_path upload", "mib", o.bigMiB)
	stopSampling := sampleRSS(r.gatewayPID)
	t.bigRate, err = sourcePathUpload(ctx, gw, map[string]any{
		"edge": edgeName, "path": filepath.Join(fleet.UploadDir, bigName), "source_path": bigName, "overwrite": true,
	}, t.bigBytes, bigSum)
	t.bigPeak, t.bigSamples = stopSampling()
	if err != nil {
		return fmt.Errorf("large source_path upload: %w", err)
	}
	return nil
}

// sampleRSS reads pid's VmRSS every rssSampleEvery until the returned stop is called, which
// reports the highest value and the number of samples.
func sampleRSS(pid int) (stop func() (peak int64, samples int)) {
	var peak int64
	var samples int
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(rssSampleEvery)
		defer tick.Stop()
		for {
			if rss, err := vmRSS(pid); err == nil {
				peak = max(peak, rss)
				samples++
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	})
	return func() (int64, int) {
		close(done)
		wg.Wait()
		return peak, samples
	}
}

// sourcePathUpload makes one upload_file call, checks the edge's size and SHA-256, and
// returns the throughput in MiB/s.
func sourcePathUpload(ctx context.Context, gw *localfleet.Gateway, args map[string]any, size int64, sum string) (float64, error) {
	t0 := time.Now()
	raw, err := gw.CallStructured(ctx, "upload_file", args)
	d := time.Since(t0)
	if err != nil {
		return 0, err
	}
	var out struct {
		Size   int64  `json:"size"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return 0, fmt.Errorf("upload_file: decode: %w", err)
	}
	if out.Size != size || out.SHA256 != sum {
		return 0, fmt.Errorf("upload_file wrote %d bytes with sha256 %s, want %d and %s", out.Size, out.SHA256, size, sum)
	}
	return mibPerSec(size, d), nil
}

// scpSync copies src to dst with scp over the master connection, then runs sync on dst, and
// returns the MiB/s of the two together. With fresh, it writes dst as upload_file does: to a
// new name beside it, synced, then renamed over it (see copySync).
func scpSync(ctx context.Context, srv *sshd, src, dst string, size int64, fresh bool) (float64, error) {
	return copySync(ctx, dst, size, fresh, func(ctx context.Context, to string) error {
		_, err := srv.run(ctx, "scp", srv.scpArgs(src, to)...)
		return err
	})
}

// cpSync copies src to dst with cp, then runs sync on dst, the way scpSync does it, and returns
// the MiB/s of the two together: the floor a network transfer of the same file is held to.
func cpSync(ctx context.Context, src, dst string, size int64, fresh bool) (float64, error) {
	return copySync(ctx, dst, size, fresh, func(ctx context.Context, to string) error {
		if out, err := exec.CommandContext(ctx, "cp", src, to).CombinedOutput(); err != nil {
			return fmt.Errorf("cp %s %s: %w: %s", src, to, err, out)
		}
		return nil
	})
}

// copySync times copy to dst then `sync` of what it wrote. In place (fresh false), copy
// truncates and rewrites the previous run's dst, so the kernel reuses the page-cache pages it
// has just freed; fresh, it writes a new file beside dst and renames it over dst afterwards,
// which is what upload_file does (atomic replacement) and needs pages the old file still
// holds. On this VM either can run at about 100 or over 1,000 MiB/s, depending on whether
// recently freed pages are at hand (docs/BENCHMARKS.md, "Upload rows and this VM's page cache").
func copySync(ctx context.Context, dst string, size int64, fresh bool, copy func(ctx context.Context, to string) error) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, sshTimeout)
	defer cancel()
	to := dst
	if fresh {
		to = dst + ".new"
		defer os.Remove(to)
	}
	t0 := time.Now()
	if err := copy(ctx, to); err != nil {
		return 0, err
	}
	if out, err := exec.CommandContext(ctx, "sync", to).CombinedOutput(); err != nil {
		return 0, fmt.Errorf("sync %s: %w: %s", to, err, out)
	}
	if fresh {
		if err := os.Rename(to, dst); err != nil {
			return 0, err
		}
	}
	d := time.Since(t0)
	if st, err := os.Stat(dst); err != nil || st.Size() != size {
		return 0, fmt.Errorf("did not write %d bytes to %s (%v)", size, dst, err)
	}
	return mibPerSec(size, d), nil
}

// busyDuring runs f and returns the machine-wide busy CPU time (/proc/stat) it took.
func busyDuring(f func() error) (time.Duration, error) {
	b0, err := machineBusy()
	if err != nil {
		return 0, err
	}
	if err := f(); err != nil {
		return 0, err
	}
	b1, err := machineBusy()
	if err != nil {
		return 0, err
	}
	return b1 - b0, nil
}

// writeRandomFile writes size pseudo-random bytes (incompressible; ChaCha8, so generating a
// GiB takes about a second) to path and returns their SHA-256 in hex.
func writeRandomFile(path string, size int64) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	var seed [32]byte
	seed[0] = byte(size)
	h := sha256.New()
	_, err = io.CopyN(io.MultiWriter(f, h), rand.NewChaCha8(seed), size)
	if err == nil {
		err = f.Sync() // written back now, not during the first timed run
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
