package kernelmodule

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"strings"
)

// ErrVermagic is wrapped when a module was built for another kernel.
var ErrVermagic = errors.New("module built for another kernel")

// ModInfo returns the key=value pairs of a module file's .modinfo section
// (license, version, vermagic, ...). Repeated keys keep the last value.
func ModInfo(path string) (map[string]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read module %s: no .modinfo section: not a kernel module", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read module %s: .modinfo: %w", path, err)
	}
	info := map[string]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte("=")); ok {
			info[string(k)] = string(v)
		}
	}
	return info, nil
}

// CheckVermagic checks that a module's vermagic string ("6.1.0-56-cloud-amd64
// SMP mod_unload ...") names the kernel release running.
func CheckVermagic(vermagic, release string) error {
	fields := strings.Fields(vermagic)
	if len(fields) == 0 {
		return fmt.Errorf("%w: module has no vermagic", ErrVermagic)
	}
	if fields[0] != release {
		return fmt.Errorf("%w: module is for %s, running %s: rebuild it against this kernel's headers (make)", ErrVermagic, fields[0], release)
	}
	return nil
}
