// Command ssmtunnel forwards local TCP ports to ports of EC2 and managed instances through AWS Systems
// Manager Session Manager, multiplexing every connection of a port over one session (or a pool of them).
// It is both the tunnel pod's entrypoint and a laptop tool:
//
//	ssmtunnel forward i-0123456789abcdef0 5432:5432 8080:80
//	ssmtunnel version
//	ssmtunnel completion bash
//
// This package only wires flags to tunnel/session and tunnel/portforward: main.go the commands, forward.go
// the forward command's flags and run, shutdown.go what SIGINT and SIGTERM do, aws.go the SSM client.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/ssmtunnel/ssmtunnel/tunnel"
	"github.com/ssmtunnel/ssmtunnel/tunnel/datachannel"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // runtime failure: session refused, closed by the service, ...
	exitUsage   = 2 // bad arguments
	// exitInterrupted: a second Ctrl-C ended forward without draining (128 + SIGINT, as shells report it).
	exitInterrupted = 130
)

func main() {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	os.Exit(runSignals(context.Background(), os.Args[1:], os.Stdout, os.Stderr, sigs))
}

// usageError is a bad-arguments error: exit code 2 and a pointer to --help.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func badUsage(format string, a ...any) error { return usageError{fmt.Errorf(format, a...)} }

// errUsagePrinted: the usage was printed instead of an error line (ssmtunnel without a command).
var errUsagePrinted = usageError{errors.New("usage printed")}

// run is the whole program, testable with real arguments. The end of ctx counts as a SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return runSignals(ctx, args, stdout, stderr, nil)
}

// runSignals is run with the process's SIGINT and SIGTERM delivered on sigs (nil: none).
func runSignals(ctx context.Context, args []string, stdout, stderr io.Writer, sigs <-chan os.Signal) int {
	root := newRootCommand(stdout, stderr, sigs)
	// Never nil: cobra reads os.Args for nil.
	root.SetArgs(append([]string{}, args...))
	cmd, err := root.ExecuteContextC(ctx)
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsagePrinted):
		return exitUsage
	case errors.Is(err, errInterrupted):
		return exitInterrupted
	case errors.As(err, &ue):
		if cmd == nil {
			cmd = root
		}
		fmt.Fprintf(stderr, "ssmtunnel: %v (see '%s --help')\n", err, cmd.CommandPath())
		return exitUsage
	}
	fmt.Fprintf(stderr, "ssmtunnel: %v\n", err)
	return exitFailure
}

const rootLong = `ssmtunnel forwards local TCP ports to ports of EC2 and managed instances (or hosts they reach) through
AWS Systems Manager Session Manager, multiplexing every connection of a port over one session.`

func newRootCommand(stdout, stderr io.Writer, sigs <-chan os.Signal) *cobra.Command {
	root := &cobra.Command{
		Use:     "ssmtunnel",
		Short:   "Forward TCP ports through AWS Session Manager",
		Long:    rootLong,
		Version: versionLine(),
		// Without a command: the usage on stderr and exit code 2, as before cobra.
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprint(stderr, cmd.UsageString())
			return errUsagePrinted
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		// Suggestions are added to the one-line error by unknownCommand.
		DisableSuggestions:         true,
		SuggestionsMinimumDistance: 2,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetVersionTemplate("{{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newForwardCommand(stdout, stderr, sigs), &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and build date",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(stdout, versionLine())
			return nil
		},
	})
	// cobra's completion command (bash, zsh, fish, powershell), made runnable so that an unknown shell is
	// a usage error rather than its help.
	root.InitDefaultCompletionCmd()
	if c, _, err := root.Find([]string{"completion"}); err == nil && c != root {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownCommand(cmd, args[0])
			}
			return nil
		}
		c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
	}
	return root
}

func versionLine() string {
	return tunnel.BuildInfo().Line("ssmtunnel", "data channel client "+datachannel.ClientVersion)
}

func unknownCommand(cmd *cobra.Command, name string) error {
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		return badUsage("unknown command %q, did you mean %q?", name, s[0])
	}
	return badUsage("unknown command %q", name)
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return badUsage("%s takes no arguments, got %q", cmd.CommandPath(), args[0])
	}
	return nil
}

// flagSet returns cmd's flags, unsorted, as they were declared.
func flagSet(cmd *cobra.Command) *pflag.FlagSet {
	fs := cmd.Flags()
	fs.SortFlags = false
	return fs
}
