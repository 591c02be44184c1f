package main

import (
	"errors"
	"strings"

	"github.com/urfave/cli/v2"
)

// Exit codes (STYLE.md): every command returns one of these.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure
	exitUsage   = 2 // usage or configuration error
	exitDoctor  = 3 // doctor found a FAIL
)

// cmdError carries an exit code and an optional hint for the operator.
type cmdError struct {
	code int
	err  error
	hint string
}

func (e *cmdError) Error() string { return e.err.Error() }
func (e *cmdError) Unwrap() error { return e.err }

func usageErr(err error, hint string) error { return &cmdError{code: exitUsage, err: err, hint: hint} }

func failure(err error, hint string) error { return &cmdError{code: exitFailure, err: err, hint: hint} }

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce.code
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	// urfave/cli's own parse errors (unknown flag, bad value) are usage errors.
	msg := err.Error()
	if strings.Contains(msg, "flag provided but not defined") || strings.Contains(msg, "invalid value") ||
		strings.Contains(msg, "Required flag") {
		return exitUsage
	}
	return exitFailure
}

func hintOf(err error) string {
	var ce *cmdError
	if errors.As(err, &ce) {
		return ce.hint
	}
	return ""
}
