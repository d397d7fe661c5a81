package server

import (
	"testing"

	"github.com/meshanics/meshanics/internal/server/store/storetest"
)

func freshPostgres(t *testing.T) string { return storetest.PostgresDatabase(t) }
