package main
import "github.com/urfave/cli/v2"
func watcherCommand() *cli.Command { return &cli.Command{Name: "watcher"} }
