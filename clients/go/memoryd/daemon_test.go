package memoryd_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// repoRoot is the repository root (the package dir is clients/go/memoryd, maybe via a GOPATH symlink).
func repoRoot(t testing.TB) string {
	if r := os.Getenv("MEMORYD_REPO"); r != "" {
		return r
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(wd)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(real, "..", "..", ".."))
}

func python(root string) string {
	if p := os.Getenv("MEMORYD_PYTHON"); p != "" {
		return p
	}
	venv := filepath.Join(root, ".venv", "bin", "python")
	if _, err := os.Stat(venv); err == nil {
		return venv
	}
	return "python3"
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDaemon runs `python -m memoryd serve --listen 127.0.0.1:<port> ARGS` until the test ends,
// returning once grpc.health.v1 reports SERVING.
func startDaemon(t testing.TB, args ...string) string {
	t.Helper()
	root := repoRoot(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(python(root), append([]string{"-m", "memoryd", "serve", "--listen", addr,
		"--shutdown-grace", "1"}, args...)...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		if t.Failed() {
			select {
			case <-exited:
				t.Logf("memoryd had exited early (%v); stderr:\n%s", cmd.ProcessState, stderr.String())
			default:
				t.Logf("memoryd stderr:\n%s", stderr.String())
			}
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	conn, err := grpc.Dial(addr, grpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("memoryd exited early:\n%s", stderr.String())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		cancel()
		if err == nil && res.Status == healthpb.HealthCheckResponse_SERVING {
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("memoryd at %s not SERVING after 30 s:\n%s", addr, stderr.String())
		}
		time.Sleep(50 * time.Millisecond) // polling interval of a readiness wait
	}
}
