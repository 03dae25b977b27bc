package filewatcherv1

import (
	"strconv"
	"strings"
)

// KindPrefix starts every EventKind's generated name.
const KindPrefix = "EVENT_KIND_"

// KindName is k the way filewatcher names kinds to people: lower case
// without the EVENT_KIND_ prefix (open, mknod, tmpfile_link), as
// filewatcher-tail's --kind takes them and its output prints them; its
// number when this build does not know it. Hand-written: generate.sh
// leaves this file alone.
func KindName(k EventKind) string {
	name, ok := EventKind_name[int32(k)]
	if !ok {
		return strconv.Itoa(int(k))
	}
	return strings.ToLower(strings.TrimPrefix(name, KindPrefix))
}
