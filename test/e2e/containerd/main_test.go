package containerd

import (
	"testing"

	"github.com/vethroute/vethroute/internal/testutil"
)

// TestMain removes the plugin and reference binaries the tests built.
func TestMain(m *testing.M) { testutil.Main(m) }
