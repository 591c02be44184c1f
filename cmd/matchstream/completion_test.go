package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The packaged zsh completion, run by a real zsh against the real binary: the completion system's
// _describe and _files are stood in for, so what the function would offer is printed.
func TestZshCompletion(t *testing.T) {
	zsh, err := exec.LookPath("zsh")
	if err != nil {
		t.Fatal("zsh is needed (make test installs it): ", err)
	}
	script, err := filepath.Abs("../../packaging/zsh-completion")
	if err != nil {
		t.Fatal(err)
	}
	harness := filepath.Join(t.TempDir(), "complete.zsh")
	os.WriteFile(harness, []byte(`PATH=$1:$PATH
_describe() { print -rl -- ${(P)4} }
_files() { print FILES }
source $2 >/dev/null
words=(${(z)3}); CURRENT=${#words}; [[ $3 == *' ' ]] && { words+=(''); CURRENT=${#words} }
_matchstream
`), 0o644)
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"matchstream ", []string{"serve", "doctor", "install", "watcher"}},
		{"matchstream serve --ad", []string{"--admin", "--advertise-host"}},
		{"matchstream serve --config ", []string{"FILES"}},
	} {
		out, err := exec.Command(zsh, "-f", harness, filepath.Dir(binary), script, tc.line).CombinedOutput()
		got := strings.Fields(string(out))
		for _, w := range tc.want {
			if err != nil || !slices.Contains(got, w) {
				t.Errorf("completing %q offered %q (%v); want %s among them", tc.line, got, err, w)
			}
		}
	}
}
