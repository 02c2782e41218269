package report

import (
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// chromium returns the headless browser to render with, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("chromium not found: the browser test of report.html needs it (Debian: apt-get install -y chromium)")
	return ""
}

// runChromium runs the browser headless on the file with the extra flags and returns its stdout.
func runChromium(t *testing.T, bin, file string, extra ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1280,2000"}, extra...)
	cmd := exec.CommandContext(ctx, bin, append(args, "file://"+file)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, stderr.String())
	}
	return out
}

// TestBrowserRender opens report.html from disk in headless Chromium: the screenshot must show
// the page (not blank, with the green and red borders of the retrieval grid), and every image
// must decode (checked by a script added to a test copy only: the report itself has none).
func TestBrowserRender(t *testing.T) {
	bin := chromium(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "report.html")
	if err := Write(path, testReport(synthetic(t, dir, 3))); err != nil {
		t.Fatal(err)
	}

	shot := filepath.Join(dir, "shot.png")
	runChromium(t, bin, path, "--screenshot="+shot)
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b.Dx() != 1280 || b.Dy() != 2000 {
		t.Errorf("screenshot is %v, want 1280x2000", b.Size())
	}
	if v := variance(img); v < 200 {
		t.Errorf("screenshot looks blank: grey variance %.1f", v)
	}
	// Border pixels: 4 px around each 128 px thumbnail; the first 6 queries (36 thumbnails, about
	// 2000 border pixels each) are within 2000 px of page height.
	green := countColor(img, 0x1f, 0x9d, 0x3a)
	red := countColor(img, 0xd3, 0x3a, 0x2c)
	blue := countColor(img, 0x3b, 0x6f, 0xd8)
	t.Logf("screenshot %s: %d green, %d red, %d blue border pixels", shot, green, red, blue)
	if green < 4*2000 || red < 4*2000 || blue < 4*2000 {
		t.Errorf("retrieval grid borders missing: %d green, %d red, %d blue pixels", green, red, blue)
	}

	// Decoding: a test copy with a script that counts the images decoded once the page loaded.
	html, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	probe := `<script>addEventListener("load", () => { const im = [...document.images];
const ok = im.filter(i => i.complete && i.naturalWidth > 0).length;
const p = document.createElement("pre"); p.id = "decoded"; p.textContent = "decoded " + ok + " of " + im.length;
document.body.append(p); });</script></body>`
	copyPath := filepath.Join(dir, "probe.html")
	if err := os.WriteFile(copyPath, []byte(strings.Replace(string(html), "</body>", probe, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	dom := string(runChromium(t, bin, copyPath, "--dump-dom", "--virtual-time-budget=10000"))
	if n := strings.Count(dom, "<img "); n != 50 {
		t.Errorf("dumped DOM has %d <img>, want 50", n)
	}
	m := regexp.MustCompile(`decoded (\d+) of (\d+)`).FindStringSubmatch(dom)
	if m == nil {
		t.Fatalf("the probe did not run: no decode count in the dumped DOM (%d bytes)", len(dom))
	}
	if m[1] != "50" || m[2] != "50" {
		t.Errorf("%s images decoded of %s, want 50 of 50", m[1], m[2])
	}
}

// countColor counts the pixels within 3 levels of the colour (r, g, b).
func countColor(img image.Image, r, g, b uint8) int {
	n := 0
	bd := img.Bounds()
	for y := bd.Min.Y; y < bd.Max.Y; y++ {
		for x := bd.Min.X; x < bd.Max.X; x++ {
			pr, pg, pb, _ := img.At(x, y).RGBA()
			if near(pr>>8, r) && near(pg>>8, g) && near(pb>>8, b) {
				n++
			}
		}
	}
	return n
}

func near(v uint32, c uint8) bool { return max(v, uint32(c))-min(v, uint32(c)) <= 3 }
