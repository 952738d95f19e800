package cli

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sys/unix"

	"mxguard/internal/users"
)

const usersSynopsis = `add NAME -f USERS_FILE
       mxguard users remove NAME -f USERS_FILE`

// Users manages auth.users_file, the submission listener's own accounts:
// mxguard users add|remove NAME -f FILE. It edits the file in place (the
// running gateway picks the change up within a second); add reads the
// password from stdin: on a terminal it asks twice without echo, otherwise
// it takes the first line.
func Users(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	top := newCommand("mxguard users", usersSynopsis, nil, stdout, stderr)
	if len(args) == 0 {
		return top.usage("missing subcommand")
	}
	sub := args[0]
	switch sub {
	case "-h", "-help", "--help":
		top.fs.Usage()
		return exitOK
	case "add", "remove":
	default:
		return top.usage("unknown subcommand %q", sub)
	}
	c := newCommand("mxguard users "+sub, "NAME -f USERS_FILE", nil, stdout, stderr)
	file := c.fs.String("f", "", "the users `file` (auth.users_file); add creates it, mode 0600")
	pos, code, ok := c.parse(args[1:])
	if !ok {
		return code
	}
	if len(pos) != 1 {
		return c.usage("want one NAME, got %d arguments", len(pos))
	}
	if *file == "" {
		return c.usage("-f USERS_FILE is required (the auth.users_file of the configuration)")
	}
	name := pos[0]
	if err := users.ValidName(name); err != nil {
		return c.usage("%v", err)
	}
	if sub == "remove" {
		if err := users.Remove(*file, name); err != nil {
			return c.fail(err)
		}
		fmt.Fprintf(stdout, "removed %s from %s\n", users.Normalize(name), *file)
		return exitOK
	}
	pw, err := readPassword(stdin, stderr)
	if err != nil {
		return c.fail(err)
	}
	added, err := users.Add(*file, name, pw, bcrypt.DefaultCost)
	if err != nil {
		return c.fail(err)
	}
	verb := "updated the password of"
	if added {
		verb = "added"
	}
	fmt.Fprintf(stdout, "%s %s in %s\n", verb, users.Normalize(name), *file)
	return exitOK
}

// readPassword takes the password from a terminal (asked twice, not
// echoed) or from the first line of stdin (a script: echo pw | mxguard
// users add ...).
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok {
		if t, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return askTwice(f, t, stderr)
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		if errors.Is(err, io.EOF) {
			return "", errors.New("no password on stdin")
		}
		return "", fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	return pw, users.ValidPassword(pw)
}

// askTwice prompts on stderr and reads two lines from the terminal f with
// echo off (the newline is still echoed, ECHONL). The terminal is restored
// on return and on SIGINT/SIGTERM, which then take their usual effect.
func askTwice(f *os.File, saved *unix.Termios, stderr io.Writer) (string, error) {
	fd := int(f.Fd())
	quiet := *saved
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ECHONL | unix.ICANON
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return "", fmt.Errorf("terminal: %w", err)
	}
	restore := func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, saved) }
	defer restore()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	defer func() { signal.Stop(sigs); close(done) }()
	go func() {
		select {
		case s := <-sigs:
			restore()
			signal.Stop(sigs)
			_ = syscall.Kill(os.Getpid(), s.(syscall.Signal)) // now with the default action
		case <-done:
		}
	}()

	r := bufio.NewReader(f)
	read := func(prompt string) (string, error) {
		fmt.Fprint(stderr, prompt)
		line, err := r.ReadString('\n')
		if err != nil {
			return "", errors.New("no password entered")
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	pw, err := read("Password: ")
	if err != nil {
		return "", err
	}
	if err := users.ValidPassword(pw); err != nil {
		return "", err
	}
	again, err := read("Password again: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", errors.New("the passwords do not match; nothing changed")
	}
	return pw, nil
}
