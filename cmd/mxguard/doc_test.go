package main

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const cliDoc = "../../docs/reference/cli.md"

// TestCLIReference proves docs/reference/cli.md documents every command
// of this binary and every flag of each: the commands come from the
// top-level usage, their subcommands from each command's "usage:" lines,
// the flags from each leaf command's -h output (Go's flag listing).
func TestCLIReference(t *testing.T) {
	b, err := os.ReadFile(cliDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	commands := usageCommands(t)
	if len(commands) < 10 {
		t.Fatalf("found %d commands in the usage; the parser no longer matches it: %v", len(commands), commands)
	}
	for _, words := range commands {
		help, code := runHelp(words)
		if code != 0 {
			t.Errorf("mxguard %s -h: exit %d, want 0:\n%s", words, code, help)
			continue
		}
		leaves := []string{words}
		if subs := subcommands(words, help); len(subs) > 0 {
			leaves = nil
			for _, s := range subs {
				leaves = append(leaves, words+" "+s)
			}
		}
		for _, leaf := range leaves {
			section, ok := docSection(doc, "`mxguard "+leaf+"`")
			if !ok {
				t.Errorf("%s has no section for `mxguard %s`", cliDoc, leaf)
				continue
			}
			help, code := runHelp(leaf)
			if code != 0 {
				t.Errorf("mxguard %s -h: exit %d, want 0:\n%s", leaf, code, help)
				continue
			}
			for _, m := range flagLine.FindAllStringSubmatch(help, -1) {
				flag := m[1]
				if !regexp.MustCompile("`--?" + regexp.QuoteMeta(flag) + "[` =]").MatchString(section) {
					t.Errorf("%s, section `mxguard %s`: flag --%s is not documented", cliDoc, leaf, flag)
				}
			}
		}
	}
}

// flagLine matches a flag of Go's flag.PrintDefaults: "  -name type".
var flagLine = regexp.MustCompile(`(?m)^  -([a-z][a-z0-9-]*)`)

// usageCommands returns the commands of the top-level usage, with the
// subcommands it shows in brackets ("events [show ID]" gives "events"
// and "events show").
func usageCommands(t *testing.T) []string {
	_, list, ok := strings.Cut(usage, "commands:\n")
	if !ok {
		t.Fatal("usage has no commands: section")
	}
	list, _, _ = strings.Cut(list, "\n\n")
	var out []string
	for line := range strings.Lines(list) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		out = append(out, f[0])
		if len(f) > 1 && strings.HasPrefix(f[1], "[") && regexp.MustCompile(`^\[[a-z]+$`).MatchString(f[1]) {
			out = append(out, f[0]+" "+strings.TrimPrefix(f[1], "["))
		}
	}
	return out
}

// subcommands reads "usage: mxguard CMD SUB ..." lines: SUB is a word or
// words joined by |.
func subcommands(cmd, help string) []string {
	re := regexp.MustCompile(`(?m)^(?:usage:)?\s+mxguard ` + regexp.QuoteMeta(cmd) + ` ([a-z]+(?:\|[a-z]+)*)(?:\s|$)`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(help, -1) {
		out = append(out, strings.Split(m[1], "|")...)
	}
	return out
}

func runHelp(words string) (string, int) {
	var out, errb bytes.Buffer
	code := run(append(strings.Fields(words), "-h"), &out, &errb)
	return out.String() + errb.String(), code
}

// docSection returns the text of the Markdown section whose heading
// contains title, up to the next heading of the same or a higher level.
func docSection(doc, title string) (string, bool) {
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		level := len(l) - len(strings.TrimLeft(l, "#"))
		if level == 0 || !strings.HasPrefix(l[level:], " ") || !strings.HasSuffix(strings.TrimSpace(l), title) {
			continue
		}
		end := len(lines)
		for j := i + 1; j < len(lines); j++ {
			if n := len(lines[j]) - len(strings.TrimLeft(lines[j], "#")); n > 0 && n <= level && strings.HasPrefix(lines[j][n:], " ") {
				end = j
				break
			}
		}
		return strings.Join(lines[i:end], "\n"), true
	}
	return "", false
}

// TestDocsStayInRepository proves the README files and docs/ never send
// a reader outside the repository for reference material: no README
// names the external contract file, and every relative Markdown link
// resolves to a file inside the repository.
func TestDocsStayInRepository(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	link := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	n := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".md") {
			return nil
		}
		n++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if strings.HasSuffix(path, "README.md") && (strings.Contains(string(b), "INTERFACE.md") || strings.Contains(string(b), "shared/spec")) {
			t.Errorf("%s refers to the contract outside the repository; link docs/reference instead", rel)
		}
		for _, m := range link.FindAllStringSubmatch(string(b), -1) {
			target := m[1]
			if strings.Contains(target, "://") || strings.HasPrefix(target, "#") || strings.HasPrefix(target, "mailto:") {
				continue
			}
			target, _, _ = strings.Cut(target, "#")
			abs := filepath.Join(filepath.Dir(path), target)
			if r, err := filepath.Rel(root, abs); err != nil || strings.HasPrefix(r, "..") {
				t.Errorf("%s links %s, outside the repository", rel, m[1])
				continue
			}
			if _, err := os.Stat(abs); err != nil {
				t.Errorf("%s links %s, which does not exist", rel, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 20 {
		t.Fatalf("found %d Markdown files under %s", n, root)
	}
}
