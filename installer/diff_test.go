package installer

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The diff is checked against GNU diff -u on the same inputs, when diff is installed (diffutils is
// Essential in Debian, so it is).
func TestUnifiedDiffMatchesGNU(t *testing.T) {
	gnu, err := exec.LookPath("diff")
	if err != nil {
		t.Fatal("diff is needed: ", err)
	}
	lines := func(s string) string { return strings.ReplaceAll(s, " ", "\n") + "\n" }
	for _, tc := range []struct{ old, new string }{
		{"", lines("a b c")},
		{lines("a b c"), ""},
		{lines("a b c d e f g h i j k l m"), lines("a b X d e f g h i j k Y m")},
		{lines("a b c d e f g h i j k l m n o p q"), lines("a b c d e f g h i j k l m n o p q r")},
		{lines("x a b c"), lines("a b c")},
		{lines("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20"), lines("1 2 3 4 5 six 7 8 9 10 11 12 13 14 15 sixteen 17 18 19 20")},
	} {
		dir := t.TempDir()
		a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
		os.WriteFile(a, []byte(tc.old), 0o644)
		os.WriteFile(b, []byte(tc.new), 0o644)
		out, _ := exec.Command(gnu, "-u", a, b).Output()
		wantHunks := string(out[strings.Index(string(out), "@@"):])
		got := unifiedDiff("/f", tc.old, tc.new)
		gotHunks := got[strings.Index(got, "@@"):]
		if gotHunks != wantHunks {
			t.Errorf("diff of %q -> %q:\ngot\n%s\nwant\n%s", tc.old, tc.new, gotHunks, wantHunks)
		}
	}
}
