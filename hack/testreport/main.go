// Command testreport reads `go test -json` on stdin, prints the tests'
// output, a skip list and one "N passed, N failed, N skipped" line, and
// exits non-zero on a failure, a build failure or, as root, a skip that is
// not in its allow-list.
//
// make test pipes its run through it, so that a test which skipped where it
// should have run (a missing binary, a missing privilege) fails CI instead
// of passing unseen.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// allowed is a skip that may happen in a root run of make test.
type allowed struct {
	Package string // import path
	Test    string // the test, or a parent whose subtests may all skip
	Reason  string // why this skip is not a test that failed to run
}

// allowList holds the skips make test may report as root, each with its
// reason: a skip that leaves nothing untested, never a test that could not
// run. It is empty: every t.Skip in the tree fires only when not root
// (testutil.RequireRoot, pkg/ipam's read-only store, kubeapi without its
// binaries), in -short mode, or in test/kind, which make test leaves to
// make e2e-kind; the fuzz targets' seeds all lie inside the bounds they
// skip outside of.
var allowList = []allowed{}

// event is one line of test2json output (go doc test2json).
type event struct {
	Action      string
	Package     string
	Test        string
	Output      string
	FailedBuild string
	ImportPath  string
}

// skip is one skipped test and the last thing it said.
type skip struct {
	Package, Test, Message string
	Allowed                bool
	Reason                 string // the allow-list's, when Allowed
}

// summary is what a run reported.
type summary struct {
	Passed, Failed, Skipped int
	Skips                   []skip
	// Problems are why the run fails, one line each.
	Problems []string
}

// OK reports whether make test may pass.
func (s *summary) OK() bool { return len(s.Problems) == 0 }

func main() {
	s, err := report(os.Stdin, os.Stdout, os.Geteuid() == 0, allowList)
	if err != nil {
		fmt.Fprintf(os.Stderr, "testreport: %v\n", err)
		os.Exit(2)
	}
	if !s.OK() {
		os.Exit(1)
	}
}

// report copies the tests' output from r to w, then writes the skip list,
// the problems and, last, the counts line. As root, a skip not in allow is
// a problem.
func report(r io.Reader, w io.Writer, root bool, allow []allowed) (*summary, error) {
	s := &summary{}
	out := bufio.NewWriter(w)
	defer out.Flush()

	// last holds each running test's last line of its own output: the
	// message t.Skip printed, when the test skips.
	type key struct{ pkg, test string }
	last := map[key]string{}
	// pkgs maps each package seen to whether it ended (pass, fail or skip).
	pkgs := map[string]bool{}
	var order []string
	failedPkgs := map[string]bool{}
	// testFailed holds the packages whose failure is already explained.
	testFailed := map[string]bool{}
	problem := func(format string, args ...any) {
		s.Problems = append(s.Problems, fmt.Sprintf(format, args...))
	}
	// builds holds the import paths reported as failed builds, once each.
	builds := map[string]bool{}
	buildFailed := func(importPath string) {
		if !builds[importPath] {
			builds[importPath] = true
			problem("%s: build failed", importPath)
		}
	}
	seen := func(pkg string) {
		if _, ok := pkgs[pkg]; !ok {
			pkgs[pkg] = false
			order = append(order, pkg)
		}
	}
	events := 0

	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event (go test itself wrote it): show it as is.
			fmt.Fprintf(out, "%s\n", line)
			continue
		}
		events++
		switch e.Action {
		case "build-output":
			fmt.Fprint(out, e.Output)
			continue
		case "build-fail":
			buildFailed(e.ImportPath)
			continue
		}
		if e.Package == "" {
			continue
		}
		seen(e.Package)
		k := key{e.Package, e.Test}
		switch e.Action {
		case "output":
			fmt.Fprint(out, e.Output)
			if e.Test == "" {
				if strings.HasPrefix(e.Output, "FAIL") {
					failedPkgs[e.Package] = true
				}
				continue
			}
			if t := strings.TrimSpace(e.Output); t != "" && !strings.HasPrefix(t, "=== ") && !strings.HasPrefix(t, "--- ") {
				last[k] = t
			}
		case "pass", "fail", "skip":
			if e.Test == "" {
				pkgs[e.Package] = true
				if e.Action == "fail" {
					failedPkgs[e.Package] = true
					if e.FailedBuild != "" {
						buildFailed(e.FailedBuild)
						testFailed[e.Package] = true // reported: its build
					}
				}
				continue
			}
			switch e.Action {
			case "pass":
				s.Passed++
			case "fail":
				s.Failed++
				testFailed[e.Package] = true
				problem("%s: %s failed", e.Package, e.Test)
			case "skip":
				s.Skipped++
				sk := skip{Package: e.Package, Test: e.Test, Message: last[k]}
				sk.Reason, sk.Allowed = allowedReason(allow, e.Package, e.Test)
				s.Skips = append(s.Skips, sk)
				if root && !sk.Allowed {
					problem("%s: %s skipped as root and is not in hack/testreport's allow-list: %s", e.Package, e.Test, sk.Message)
				}
			}
			delete(last, k)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("input read: %w", err)
	}

	for _, p := range order {
		switch {
		case !pkgs[p]:
			problem("%s: no result (the test binary or go test stopped early)", p)
		case failedPkgs[p] && !testFailed[p]:
			problem("%s: failed with no failing test (build, vet, TestMain, a panic or a timeout: see its output)", p)
		}
	}
	if events == 0 {
		problem("no test2json events on stdin: run go test with -json")
	}

	if len(s.Skips) > 0 {
		fmt.Fprintf(out, "\nskipped tests (%d):\n", len(s.Skips))
		for _, sk := range s.Skips {
			note := ""
			if sk.Allowed {
				note = " [allowed: " + sk.Reason + "]"
			}
			fmt.Fprintf(out, "  %s %s%s: %s\n", sk.Package, sk.Test, note, sk.Message)
		}
	}
	if len(s.Problems) > 0 {
		fmt.Fprintf(out, "\ntestreport: the run fails (%d):\n", len(s.Problems))
		for _, p := range s.Problems {
			fmt.Fprintf(out, "  %s\n", p)
		}
	}
	fmt.Fprintf(out, "%d passed, %d failed, %d skipped\n", s.Passed, s.Failed, s.Skipped)
	return s, nil
}

// allowedReason returns the reason of the entry in allow that covers the
// skip of test in pkg: one that names the test itself or a parent of it.
func allowedReason(allow []allowed, pkg, test string) (string, bool) {
	for _, a := range allow {
		if a.Package == pkg && (a.Test == test || strings.HasPrefix(test, a.Test+"/")) {
			return a.Reason, true
		}
	}
	return "", false
}
