package config

import (
	"fmt"
	"strings"
)

// Error is one problem in a configuration file, printed by check-config as
// "FILE:LINE: message (hint)" so editors and CI logs can jump to the line.
type Error struct {
	File string
	Line int // 1-based; 0 when the problem is not tied to a line (unreadable file)
	Msg  string
	Hint string
}

func (e Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.Hint != "" {
		b.WriteString(" (")
		b.WriteString(e.Hint)
		b.WriteString(")")
	}
	return b.String()
}

// Errors is every problem found in one file, in line order. Load and Parse
// return it as their error so an operator fixes a file in one pass.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// suggest returns a hint for an unknown word: the closest valid one when
// it is plausibly a typo, otherwise the list of valid words.
func suggest(got string, valid []string) string {
	best, bestDist := "", len(got)/3+2
	for _, v := range valid {
		if d := editDistance(got, v); d < bestDist {
			best, bestDist = v, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "valid: " + strings.Join(valid, ", ")
}

// editDistance is the Levenshtein distance, small inputs only.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
