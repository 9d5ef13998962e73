package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"
)

const adminUsage = `usage: coordinator admin hash-password

  hash-password   read a password (a prompt without echo on a terminal, else the
                  first line of standard input) and print its bcrypt hash for
                  admin.basic_auth[].password_bcrypt; never from the command line
`

// minAdminPassword is the shortest dashboard password hashed: the dashboard
// can retry orders for every learner, and bcrypt only slows guessing.
const minAdminPassword = 12

// adminCommand runs `coordinator admin ...`. It needs no config: an
// operator makes the hash before writing the file that holds it.
func adminCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "help" {
		fmt.Fprint(stdout, adminUsage)
		return nil
	}
	if args[0] != "hash-password" {
		fmt.Fprint(stderr, adminUsage)
		return fmt.Errorf("admin: unknown command %q", args[0])
	}
	if len(args) > 1 {
		// A password in argv lands in shell history and in ps for every user.
		return errors.New("admin hash-password takes no arguments: it reads the password from a prompt or standard input, never from the command line")
	}
	password, err := readPassword(stdin, stderr)
	if err != nil {
		return err
	}
	switch {
	case len(password) < minAdminPassword:
		return fmt.Errorf("admin hash-password: the password has %d characters; use at least %d", len(password), minAdminPassword)
	case len(password) > 72:
		return errors.New("admin hash-password: the password is longer than 72 bytes, bcrypt's limit")
	}
	hash, err := bcrypt.GenerateFromPassword(password, bcrypt.DefaultCost)
	if err != nil {
		return fmt.Errorf("admin hash-password: %w", err)
	}
	fmt.Fprintln(stdout, string(hash))
	return nil
}

// readPassword prompts twice without echo when stdin is a terminal, and
// otherwise reads its first line (echo 'pw' | coordinator admin hash-password).
func readPassword(stdin io.Reader, stderr io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(stderr, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("admin hash-password: read the password: %w", err)
		}
		fmt.Fprint(stderr, "Again: ")
		again, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(stderr)
		if err != nil {
			return nil, fmt.Errorf("admin hash-password: read the password: %w", err)
		}
		if !bytes.Equal(first, again) {
			return nil, errors.New("admin hash-password: the passwords differ")
		}
		return first, nil
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 4096)).ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("admin hash-password: read standard input: %w", err)
	}
	return bytes.TrimRight(line, "\r\n"), nil
}
