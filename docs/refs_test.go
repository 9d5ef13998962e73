package docs

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

// The repository's root, seen from this package's directory.
const root = ".."

// scanned says which files are read for references: the Go code, the
// Markdown, the YAML (config, deploy) and the SQL migrations.
func scanned(path string) bool {
	switch filepath.Ext(path) {
	case ".go", ".md", ".yaml", ".yml", ".sql":
		return true
	}
	return false
}

var (
	// outside names documents kept outside the repository, which a reader
	// of it does not have.
	outside = regexp.MustCompile(`\bSPEC\b|\b(LMS|STYLE|CATALOG-FACTS)\.md\b`)
	// mdLink is a Markdown link or image target.
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// repoPath is a path from the repository's root named in prose, code
	// or comments (docs/lms.md, internal/shop/plan.go, deploy/tutor/).
	repoPath = regexp.MustCompile(`(?:^|[^\w./-])((?:docs|internal|cmd|deploy|configs|migrations)/[\w./-]*[\w/])`)
)

// notOurs are paths that look like the repository's but are not meant to
// be in it, with the reason.
var notOurs = map[string]string{
	"internal/base":                 "asynq's own package, named in internal/queue",
	"internal/proto":                "asynq's own package, named in internal/queue",
	"internal/rdb":                  "asynq's own package, named in internal/queue",
	"deploy/.env":                   "the file deploy/README.md has the operator write",
	"deploy/coordinator.local.yaml": "the file deploy/README.md has the operator write",
	"deploy/coordinator.env":        "the file deploy/README.md and docs/integrations.md have the operator write",
}

// ref is one reference found, where it was found.
type ref struct {
	file string
	line int
	text string
}

// TestReferencesStayInRepository fails on every reference a reader of the
// repository cannot follow: a mention of the team's own design documents
// (which are not in the repository), a relative Markdown link to a file that
// does not exist or to a heading its target does not have, and a path from
// the repository's root (docs/…, internal/…, cmd/…, deploy/…, configs/…,
// migrations/…) that names nothing.
func TestReferencesStayInRepository(t *testing.T) {
	var bad []ref
	headings := map[string]map[string]bool{} // Markdown file → its anchors
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "node_modules") {
				return filepath.SkipDir
			}
			return nil
		}
		if !scanned(path) || filepath.Base(path) == "refs_test.go" {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		rel, _ := filepath.Rel(root, path)
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			if m := outside.FindString(line); m != "" {
				bad = append(bad, ref{rel, n, m + " (a document outside the repository: point to docs/ or the README instead)"})
			}
			if filepath.Ext(path) == ".md" {
				for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
					if problem := checkLink(path, m[1], headings); problem != "" {
						bad = append(bad, ref{rel, n, m[1] + ": " + problem})
					}
				}
			}
			for _, m := range repoPath.FindAllStringSubmatchIndex(line, -1) {
				if problem := checkPath(line, m[2], m[3]); problem != "" {
					bad = append(bad, ref{rel, n, problem})
				}
			}
		}
		return sc.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range bad {
		t.Errorf("%s:%d: %s", b.file, b.line, b.text)
	}
}

// checkPath checks the path line[start:end]: it must name a file or
// directory of the repository, or, followed by a "*", match one.
func checkPath(line string, start, end int) string {
	p := strings.TrimRight(line[start:end], ".")
	for prefix := range notOurs {
		if p == prefix || strings.HasPrefix(p, prefix+"/") {
			return ""
		}
	}
	// A glob (deploy/systemd/coordinator-*.service): the match stopped
	// before its "*".
	glob := strings.TrimLeft(line[end:], "-._")
	if strings.HasPrefix(glob, "*") {
		pattern := line[start:len(line)-len(glob)] + "*"
		if m, _ := filepath.Glob(filepath.Join(root, pattern)); len(m) > 0 {
			return ""
		}
		return pattern + ": matches nothing in the repository"
	}
	if _, err := os.Stat(filepath.Join(root, p)); err != nil {
		return p + ": no such file or directory in the repository"
	}
	return ""
}

// checkLink checks one Markdown link target of the file at path: external
// links are left alone; a relative one must name a file of the repository
// and, when it has a fragment and is Markdown, one of its headings.
func checkLink(path, target string, headings map[string]map[string]bool) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	file, frag, _ := strings.Cut(target, "#")
	file, _, _ = strings.Cut(file, "?")
	dest := path
	if file != "" {
		dest = filepath.Join(filepath.Dir(path), filepath.FromSlash(file))
		if _, err := os.Stat(dest); err != nil {
			return "no such file in the repository"
		}
	}
	if frag == "" || filepath.Ext(dest) != ".md" {
		return ""
	}
	anchors, ok := headings[dest]
	if !ok {
		anchors = markdownAnchors(dest)
		headings[dest] = anchors
	}
	if !anchors[frag] {
		return "no heading with this anchor in " + filepath.Base(dest)
	}
	return ""
}

// markdownAnchors lists the anchors GitHub gives a Markdown file's headings:
// lower case, punctuation dropped, spaces as hyphens, "-1", "-2" … on repeats.
func markdownAnchors(path string) map[string]bool {
	anchors := map[string]bool{}
	raw, err := os.ReadFile(path)
	if err != nil {
		return anchors
	}
	seen := map[string]int{}
	fenced := false
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
			continue
		}
		if fenced || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-':
				b.WriteRune(r)
			case r == ' ':
				b.WriteRune('-')
			}
		}
		a := b.String()
		if n := seen[a]; n > 0 {
			anchors[a+"-"+strconv.Itoa(n)] = true
		} else {
			anchors[a] = true
		}
		seen[a]++
	}
	return anchors
}
