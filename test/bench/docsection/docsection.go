package docsection

import (
	"fmt"
	"regexp"
	"strings"
)

// A section is the text between a line "<!-- name:begin -->" and the next
// line "<!-- name:end -->", markers included.
var beginRE = regexp.MustCompile(`(?m)^<!-- ([a-z0-9][a-z0-9-]*):begin -->[ \t]*$`)

// Section is one marked section of a document.
type Section struct {
	// Name is the marker's name.
	Name string
	// Text is the whole section, both marker lines included, ending in a
	// newline.
	Text string
}

// Begin and End return the marker lines of the section name.
func Begin(name string) string { return "<!-- " + name + ":begin -->" }

// End returns the closing marker line of the section name.
func End(name string) string { return "<!-- " + name + ":end -->" }

// Wrap returns body between the markers of name, as a Section's Text.
func Wrap(name, body string) string {
	body = strings.TrimRight(body, "\n")
	return Begin(name) + "\n" + body + "\n" + End(name) + "\n"
}

// Find returns the sections of doc in order. A begin marker without its end
// marker is not a section (it is left as ordinary text).
func Find(doc string) []Section {
	var out []Section
	pos := 0
	for {
		loc := beginRE.FindStringSubmatchIndex(doc[pos:])
		if loc == nil {
			return out
		}
		start := pos + loc[0]
		name := doc[pos+loc[2] : pos+loc[3]]
		end, ok := endOf(doc, pos+loc[1], name)
		if !ok {
			pos += loc[1]
			continue
		}
		out = append(out, Section{Name: name, Text: doc[start:end]})
		pos = end
	}
}

// endOf returns the offset just after the end marker line of name found at
// or after from.
func endOf(doc string, from int, name string) (int, bool) {
	marker := End(name)
	for i := from; i < len(doc); {
		j := strings.Index(doc[i:], marker)
		if j < 0 {
			return 0, false
		}
		at := i + j
		lineStart := at == 0 || doc[at-1] == '\n'
		after := at + len(marker)
		rest := strings.TrimLeft(doc[after:], " \t")
		if lineStart && (rest == "" || rest[0] == '\n') {
			end := len(doc) - len(rest)
			if end < len(doc) {
				end++ // the newline
			}
			return end, true
		}
		i = after
	}
	return 0, false
}

// Replace returns doc with the section name set to Wrap(name, body): in
// place when doc has it, else appended after a blank line.
func Replace(doc, name, body string) string {
	text := Wrap(name, body)
	for _, s := range Find(doc) {
		if s.Name == name {
			i := strings.Index(doc, s.Text)
			return doc[:i] + text + doc[i+len(s.Text):]
		}
	}
	return appendSection(doc, text)
}

// Preserve returns generated with every section of old carried over: a
// section generated also has is replaced by old's, one it lacks is
// appended. A generator that rewrites a whole file passes it the previous
// file, so the sections other generators own survive.
func Preserve(old, generated string) string {
	out := generated
	for _, s := range Find(old) {
		if s.Name == "" {
			continue
		}
		found := false
		for _, g := range Find(out) {
			if g.Name == s.Name {
				i := strings.Index(out, g.Text)
				out = out[:i] + s.Text + out[i+len(g.Text):]
				found = true
				break
			}
		}
		if !found {
			out = appendSection(out, s.Text)
		}
	}
	return out
}

func appendSection(doc, text string) string {
	switch {
	case doc == "":
		return text
	case strings.HasSuffix(doc, "\n\n"):
		return doc + text
	case strings.HasSuffix(doc, "\n"):
		return doc + "\n" + text
	}
	return doc + "\n\n" + text
}

// Check reports an error when name is not a valid section name.
func Check(name string) error {
	if !beginRE.MatchString(Begin(name)) {
		return fmt.Errorf("section name %q: want lowercase letters, digits and dashes", name)
	}
	return nil
}
