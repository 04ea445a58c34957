package integration

import (
	"testing"

	"github.com/vethroute/vethroute/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }
