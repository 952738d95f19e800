package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestAuthKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "users")
	bad := filepath.Join(dir, "bad-users")
	if err := os.WriteFile(good, []byte("alice:$2a$10$examplehashexamplehashexamplehashexamplehashexamplehas\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("# ok\nbob:{PLAIN}secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, yaml string
		want       string // "" = valid
	}{
		{"users file", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\nauth: {users_file: " + good + "}\n", ""},
		{"downstream", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\nauth: {downstream: true}\n", ""},
		{"neither", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\n",
			"t.yaml:1: listen.submission: submission requires AUTH but no way to check it is configured (set auth.users_file or auth.downstream: true)"},
		{"both", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\nauth: {users_file: " + good + ", downstream: true}\n",
			"t.yaml:2: auth.downstream: cannot be used with auth.users_file"},
		{"users file without submission", "auth: {users_file: " + good + "}\n",
			"t.yaml:1: auth.users_file: has no effect without listen.submission"},
		{"a bad line in the users file", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\nauth: {users_file: " + bad + "}\n",
			"t.yaml:2: auth.users_file: " + bad + ":2: bob: not a bcrypt hash"},
		{"a missing users file", "listen: {smtp: 127.0.0.1:25, submission: 127.0.0.1:587}\nauth: {users_file: " + filepath.Join(dir, "none") + "}\n",
			"t.yaml:2: auth.users_file: cannot read"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == "" {
				mustParse(t, tc.yaml+minimal)
				return
			}
			lines := errorLines(t, tc.yaml+minimal)
			if !slices.ContainsFunc(lines, func(l string) bool { return strings.HasPrefix(l, tc.want) }) {
				t.Errorf("errors %q\nwant one starting %q", lines, tc.want)
			}
		})
	}
}
