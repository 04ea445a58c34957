// Package docsection finds, replaces and carries over the marked sections of
// a generated markdown file, so that several generators can share one file
// (docs/benchmarks.md) without one rewrite dropping another's section.
package docsection
