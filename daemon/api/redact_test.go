package api

import "testing"

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`error when reading request headers: cannot parse content-length: unexpected first char found: expecting 0-9: buffer size=94, contents: "POST /x HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n"`,
			`error when reading request headers: cannot parse content-length: unexpected first char found: expecting 0-9: buffer size=94, contents: [request not logged]`},
		{`unsupported http request method "GARBAGE" in "GARBAGE / HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n": buffer size=53`,
			`unsupported http request method "GARBAGE" in [request not logged]`},
		{`header Authorization: Bearer abc.def`, `header Authorization: Bearer [redacted]`},
		{`authorization:basic dXNlcg== and bearer xyz`, `authorization:basic [redacted] and bearer [redacted]`},
		{`the token s3cret alone`, `the token [redacted] alone`},
		{`error when serving connection: empty hex number`, `error when serving connection: empty hex number`},
	} {
		if got := redact(c.in, "s3cret"); got != c.want {
			t.Errorf("redact(%q)\n got %q\nwant %q", c.in, got, c.want)
		}
	}
}
