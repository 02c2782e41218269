package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestCommandsTouchOnlyTheirFolders traces `run`, `embed`, `index` and `search` with strace and
// checks that they create, write, rename or delete nothing outside their declared folders (the
// run folder, the cache, the --out folder of embed and index, TMPDIR), never read /etc/machine-id
// and open no network socket. onnxruntime's telemetry did all of these (/tmp/mat-debug-<pid>.log,
// /tmp/.ses, ~/.cache/Microsoft/DeveloperTools/.onnxruntime/, DNS queries for its host).
func TestCommandsTouchOnlyTheirFolders(t *testing.T) {
	needORT(t)
	strace, err := exec.LookPath("strace")
	if err != nil {
		t.Skip("strace is not installed (apt-get install strace)")
	}
	if err := exec.Command(strace, "-f", "-o", "/dev/null", "true").Run(); err != nil {
		t.Skipf("strace cannot trace here: %v", err)
	}
	dir := t.TempDir()
	tmp := filepath.Join(dir, "tmp")
	os.MkdirAll(tmp, 0o755)
	manifest := badDataset(t, filepath.Join(dir, "data"), []int{6, 6, 6, 6, 6})
	cfg := badWrite(t, filepath.Join(dir, "cfg.yaml"), pointwiseConfig+"optimizer:\n  epochs: 2\n")
	model := pointwiseModel(t, dir, "Relu")
	out, cache, emb := filepath.Join(dir, "run"), filepath.Join(dir, "cache"), filepath.Join(dir, "emb")
	trace := func(name string, allowed []string, args ...string) {
		t.Helper()
		log := filepath.Join(dir, name+".strace")
		cmd := exec.Command(strace, "-f", "-qq", "-y", "-o", log,
			"-e", "trace=open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,socket,connect,sendto",
			os.Args[0], "-test.run=^TestResumeChildProcess$", "-test.count=1")
		argv, _ := json.Marshal(args)
		cmd.Env = append(os.Environ(), "PIPELINE_TEST_CHILD_ARGS="+string(argv), "TMPDIR="+tmp)
		cmd.Env = slicesWithout(cmd.Env, "ORT_DISABLE_TELEMETRY=") // the program turns telemetry off itself
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, b)
		}
		b, err := os.ReadFile(log)
		if err != nil {
			t.Fatal(err)
		}
		if bad := outsideWrites(string(b), append(allowed, tmp)); len(bad) > 0 {
			t.Errorf("%s touched files outside %v, or the network:\n%s", name, allowed, strings.Join(bad, "\n"))
		}
	}
	trace("run", []string{out, cache}, "run", "--config", cfg, "--data", manifest, "--backbone", model,
		"--cache", cache, "--train-classes", "3", "--out", out)
	trace("embed", []string{emb}, "embed", "--model", filepath.Join(out, "model.onnx"), "--data", manifest,
		"--out", filepath.Join(emb, "e.npy"), "--threads", "1")
	trace("index", []string{emb}, "index", "--embeddings", filepath.Join(emb, "e.npy"), "--out", filepath.Join(emb, "g.idx"))
	trace("search", nil, "search", "--index", filepath.Join(emb, "g.idx"), "--query-npy", filepath.Join(emb, "e.npy"), "-k", "2")
	trace("index with a model", []string{emb}, "index", "--model", filepath.Join(out, "model.onnx"), "--data", manifest,
		"--out", filepath.Join(emb, "m.idx"), "--threads", "1")
	trace("search an image", nil, "search", "--index", filepath.Join(emb, "m.idx"),
		"--query", filepath.Join(dir, "data", "c0", "0.png"), "-k", "2", "--threads", "1")
}

func slicesWithout(env []string, prefix string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	return out
}

var (
	// openat(AT_FDCWD, "/p", O_WRONLY|O_CREAT...) or openat(3</dir>, "name", ...); -y prints fd paths.
	reOpen   = regexp.MustCompile(`\bopen(?:at)?\((?:(AT_FDCWD(?:<[^>]*>)?|\d+<([^>]*)>), )?"([^"]*)", ([A-Z_|]+)`)
	rePathOp = regexp.MustCompile(`\b(creat|mkdir|mkdirat|rename|renameat2?|unlink|unlinkat|rmdir)\((.*)\)\s*=`)
	reArg    = regexp.MustCompile(`(?:(AT_FDCWD(?:<[^>]*>)?|\d+<([^>]*)>), )?"([^"]*)"`)
	reSocket = regexp.MustCompile(`\bsocket\((AF_INET6?|AF_NETLINK|AF_PACKET)`)
)

// outsideWrites returns the trace lines that write outside the allowed folders, read the machine
// id, or open a network socket.
func outsideWrites(trace string, allowed []string) []string {
	inside := func(dirPath, p string) bool {
		if !filepath.IsAbs(p) && dirPath != "" {
			p = filepath.Join(dirPath, p)
		}
		if !filepath.IsAbs(p) {
			return false // relative to the working folder: not a declared folder
		}
		p = filepath.Clean(p)
		for _, a := range allowed {
			if p == a || strings.HasPrefix(p, a+string(filepath.Separator)) {
				return true
			}
		}
		return p == "/dev/null" || strings.HasPrefix(p, "/dev/tty")
	}
	var bad []string
	for _, line := range strings.Split(trace, "\n") {
		if strings.Contains(line, "machine-id") || reSocket.MatchString(line) {
			bad = append(bad, line)
			continue
		}
		if m := reOpen.FindStringSubmatch(line); m != nil {
			if strings.Contains(m[4], "O_WRONLY") || strings.Contains(m[4], "O_RDWR") || strings.Contains(m[4], "O_CREAT") {
				if !inside(m[2], m[3]) {
					bad = append(bad, line)
				}
			}
			continue
		}
		if m := rePathOp.FindStringSubmatch(line); m != nil {
			for _, a := range reArg.FindAllStringSubmatch(m[2], -1) {
				if !inside(a[2], a[3]) {
					bad = append(bad, line)
					break
				}
			}
		}
	}
	return bad
}
