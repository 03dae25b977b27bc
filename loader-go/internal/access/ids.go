package access

import (
	"fmt"
	"os/user"
	"strconv"
)

// LookupUIDs resolves user names or numbers (--allow-uids).
func LookupUIDs(names []string) ([]uint32, error) {
	return lookupIDs(names, "--allow-uids", func(s string) (string, error) {
		u, err := user.Lookup(s)
		if err != nil {
			return "", err
		}
		return u.Uid, nil
	})
}

// LookupGIDs resolves group names or numbers (--allow-gids).
func LookupGIDs(names []string) ([]uint32, error) {
	return lookupIDs(names, "--allow-gids", func(s string) (string, error) {
		g, err := user.LookupGroup(s)
		if err != nil {
			return "", err
		}
		return g.Gid, nil
	})
}

func lookupIDs(names []string, flag string, lookup func(string) (string, error)) ([]uint32, error) {
	ids := make([]uint32, 0, len(names))
	for _, s := range names {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			id, lerr := lookup(s)
			if lerr != nil {
				return nil, fmt.Errorf("%s %q: %w", flag, s, lerr)
			}
			if n, err = strconv.ParseUint(id, 10, 32); err != nil {
				return nil, fmt.Errorf("%s %q: id %q: %w", flag, s, id, err)
			}
		}
		ids = append(ids, uint32(n))
	}
	return ids, nil
}
