package main
import "github.com/urfave/cli/v2"
func clientCommand() *cli.Command { return &cli.Command{Name: "client"} }
