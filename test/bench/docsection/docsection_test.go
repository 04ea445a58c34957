package docsection

import (
	"strings"
	"testing"
)

func TestFind(t *testing.T) {
	doc := "# T\n\n<!-- a:begin -->\nA\n<!-- a:end -->\ntext\n<!-- b:begin -->\nB1\nB2\n<!-- b:end -->\n<!-- open:begin -->\nno end\n"
	got := Find(doc)
	if len(got) != 2 || got[0].Name != "a" || got[1].Name != "b" {
		t.Fatalf("Find = %+v, want sections a and b", got)
	}
	if got[0].Text != "<!-- a:begin -->\nA\n<!-- a:end -->\n" {
		t.Errorf("section a = %q", got[0].Text)
	}
	if got[1].Text != "<!-- b:begin -->\nB1\nB2\n<!-- b:end -->\n" {
		t.Errorf("section b = %q", got[1].Text)
	}
}

func TestReplace(t *testing.T) {
	tests := []struct {
		name, doc, want string
	}{
		{"appended to an empty file", "", "<!-- s:begin -->\nnew\n<!-- s:end -->\n"},
		{"appended after a blank line", "# T\ntext\n", "# T\ntext\n\n<!-- s:begin -->\nnew\n<!-- s:end -->\n"},
		{"replaced in place", "# T\n<!-- s:begin -->\nold\nlines\n<!-- s:end -->\ntail\n", "# T\n<!-- s:begin -->\nnew\n<!-- s:end -->\ntail\n"},
		{"another section untouched", "<!-- o:begin -->\nO\n<!-- o:end -->\n", "<!-- o:begin -->\nO\n<!-- o:end -->\n\n<!-- s:begin -->\nnew\n<!-- s:end -->\n"},
		{"a marker inside a line is text", "x <!-- s:begin --> y\n", "x <!-- s:begin --> y\n\n<!-- s:begin -->\nnew\n<!-- s:end -->\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Replace(tc.doc, "s", "new\n"); got != tc.want {
				t.Errorf("Replace =\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

func TestPreserve(t *testing.T) {
	old := "# Old\nold text\n<!-- scale:begin -->\nscale figures\n<!-- scale:end -->\n<!-- other:begin -->\nO\n<!-- other:end -->\n"
	tests := []struct {
		name, generated, want string
	}{
		{"appended when the generator has none", "# New\nnew text\n",
			"# New\nnew text\n\n<!-- scale:begin -->\nscale figures\n<!-- scale:end -->\n\n<!-- other:begin -->\nO\n<!-- other:end -->\n"},
		{"kept in the generator's place", "# New\n<!-- scale:begin -->\nplaceholder\n<!-- scale:end -->\nafter\n",
			"# New\n<!-- scale:begin -->\nscale figures\n<!-- scale:end -->\nafter\n\n<!-- other:begin -->\nO\n<!-- other:end -->\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Preserve(old, tc.generated)
			if got != tc.want {
				t.Errorf("Preserve =\n%q\nwant\n%q", got, tc.want)
			}
			if strings.Contains(got, "old text") {
				t.Error("unmarked old text carried over")
			}
		})
	}
	if got := Preserve("", "# New\n"); got != "# New\n" {
		t.Errorf("Preserve without an old file = %q", got)
	}
}

func TestCheck(t *testing.T) {
	for name, ok := range map[string]bool{"bench-scale": true, "a1": true, "": false, "Bad": false, "x y": false, "-x": false} {
		if err := Check(name); (err == nil) != ok {
			t.Errorf("Check(%q) = %v, want ok %v", name, err, ok)
		}
	}
}
