package main

import (
	"log/slog"
	"testing"
)

func TestJournalFields(t *testing.T) {
	for in, want := range map[string]string{
		"match": "MATCH", "socket_activated": "SOCKET_ACTIVATED", "net.core.somaxconn": "NET_CORE_SOMAXCONN",
		"9lives": "F_9LIVES", "_x": "F__X", "": "F_",
	} {
		if got := fieldName(in); got != want {
			t.Errorf("fieldName(%q) = %q, want %q", in, got, want)
		}
	}
	vars := map[string]string{}
	addField(vars, "", slog.Group("hub", slog.Int("queued", 3), slog.String("reason", "slow_consumer")))
	addField(vars, "", slog.Any("port", 9000))
	if vars["HUB_QUEUED"] != "3" || vars["HUB_REASON"] != "slow_consumer" || vars["PORT"] != "9000" {
		t.Errorf("fields = %v", vars)
	}
	if priority(slog.LevelWarn) != 4 || priority(slog.LevelError) != 3 || priority(slog.LevelInfo) != 6 {
		t.Error("priorities do not follow syslog's")
	}
}
