package matchfile

import (
	"fmt"
	"strconv"
	"strings"

	"matchstream/daemon/match"
)

// A small reader for the subset of Erlang term syntax the original's match files use: tuples,
// lists, binaries <<"...">>, atoms, integers, % comments, and a '.' after each top-level term.

type termKind int

const (
	tAtom termKind = iota
	tInt
	tBinary
	tTuple
	tList
)

type term struct {
	kind  termKind
	text  string // atom name or binary contents
	n     int64
	elems []term
	line  int
}

// maxDepth bounds nesting so a hostile file cannot exhaust the stack.
const maxDepth = 32

type parser struct {
	data []byte
	pos  int
	line int
}

func parseTerms(data []byte) ([]term, error) {
	p := &parser{data: data, line: 1}
	var out []term
	for {
		p.skip()
		if p.pos >= len(p.data) {
			return out, nil
		}
		t, err := p.term(0)
		if err != nil {
			return nil, err
		}
		p.skip()
		if !p.eat('.') {
			return nil, p.errf("expected '.' after a term")
		}
		out = append(out, t)
	}
}

func (p *parser) errf(format string, a ...any) error {
	return fmt.Errorf("line %d: %s", p.line, fmt.Sprintf(format, a...))
}

func (p *parser) skip() {
	for p.pos < len(p.data) {
		switch c := p.data[p.pos]; {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '%':
			for p.pos < len(p.data) && p.data[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func (p *parser) eat(c byte) bool {
	if p.pos < len(p.data) && p.data[p.pos] == c {
		p.pos++
		return true
	}
	return false
}

// eatAll consumes s if the input continues with it.
func (p *parser) eatAll(s string) bool {
	if !strings.HasPrefix(string(p.data[p.pos:min(len(p.data), p.pos+len(s))]), s) {
		return false
	}
	p.pos += len(s)
	return true
}

func (p *parser) term(depth int) (term, error) {
	if depth > maxDepth {
		return term{}, p.errf("terms nested too deep")
	}
	p.skip()
	if p.pos >= len(p.data) {
		return term{}, p.errf("unexpected end of file")
	}
	line := p.line
	c := p.data[p.pos]
	switch {
	case c == '{' || c == '[':
		p.pos++
		closer, kind := byte('}'), tTuple
		if c == '[' {
			closer, kind = ']', tList
		}
		t := term{kind: kind, line: line}
		p.skip()
		if p.eat(closer) {
			return t, nil
		}
		for {
			e, err := p.term(depth + 1)
			if err != nil {
				return term{}, err
			}
			t.elems = append(t.elems, e)
			p.skip()
			if p.eat(closer) {
				return t, nil
			}
			if !p.eat(',') {
				return term{}, p.errf("expected ',' or '%c'", closer)
			}
		}
	case c == '<':
		if !p.eatAll(`<<"`) {
			return term{}, p.errf(`expected <<"`)
		}
		start := p.pos
		for p.pos < len(p.data) && p.data[p.pos] != '"' {
			if p.data[p.pos] == '\\' || p.data[p.pos] == '\n' {
				return term{}, p.errf("escapes and newlines are not supported in binaries")
			}
			p.pos++
		}
		s := string(p.data[start:p.pos])
		if !p.eatAll(`">>`) {
			return term{}, p.errf(`expected ">>`)
		}
		return term{kind: tBinary, text: s, line: line}, nil
	case c == '-' || c >= '0' && c <= '9':
		start := p.pos
		p.pos++
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
		}
		n, err := strconv.ParseInt(string(p.data[start:p.pos]), 10, 64)
		if err != nil {
			return term{}, p.errf("bad integer %q", p.data[start:p.pos])
		}
		return term{kind: tInt, n: n, line: line}, nil
	case c >= 'a' && c <= 'z':
		start := p.pos
		for p.pos < len(p.data) && (isAlnum(p.data[p.pos]) || p.data[p.pos] == '_' || p.data[p.pos] == '@') {
			p.pos++
		}
		return term{kind: tAtom, text: string(p.data[start:p.pos]), line: line}, nil
	default:
		return term{}, p.errf("unexpected %q", c)
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func (t term) pair() (string, term, bool) {
	if t.kind != tTuple || len(t.elems) != 2 || t.elems[0].kind != tAtom {
		return "", term{}, false
	}
	return t.elems[0].text, t.elems[1], true
}

func (t term) binary() (string, bool) { return t.text, t.kind == tBinary }
func (t term) atom() (string, bool)   { return t.text, t.kind == tAtom }
func (t term) integer() (int64, bool) { return t.n, t.kind == tInt }
func (t term) list() ([]term, bool)   { return t.elems, t.kind == tList }

func (t term) ints(n int) ([]int, bool) {
	if t.kind != tTuple || len(t.elems) != n {
		return nil, false
	}
	out := make([]int, n)
	for i, e := range t.elems {
		if e.kind != tInt || e.n < 0 || e.n > 1<<20 {
			return nil, false
		}
		out[i] = int(e.n)
	}
	return out, true
}

// player reads a shirt number (the name comes from the line-up) or {Number, <<"Name">>}.
func (t term) player() (*match.Player, error) {
	switch {
	case t.kind == tInt && t.n >= 0 && t.n < 1000:
		return &match.Player{Number: int(t.n)}, nil
	case t.kind == tTuple && len(t.elems) == 2 && t.elems[0].kind == tInt && t.elems[1].kind == tBinary &&
		t.elems[0].n >= 0 && t.elems[0].n < 1000:
		return &match.Player{Number: int(t.elems[0].n), Name: t.elems[1].text}, nil
	}
	return nil, fmt.Errorf("a player is a shirt number or {Number, <<\"Name\">>}")
}

func (t term) players() ([]match.Player, error) {
	if t.kind != tList {
		return nil, fmt.Errorf("players must be a list")
	}
	out := make([]match.Player, 0, len(t.elems))
	for _, e := range t.elems {
		p, err := e.player()
		if err != nil {
			return nil, err
		}
		out = append(out, *p)
	}
	return out, nil
}
