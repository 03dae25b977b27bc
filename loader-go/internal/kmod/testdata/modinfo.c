// Source of modinfo-6.1.0-56-cloud-amd64.o, a fixture with a .modinfo section
// laid out as in a kernel module. Rebuild with:
//
//	clang -target bpfel -c -o modinfo-6.1.0-56-cloud-amd64.o modinfo.c
#define MODINFO(name, s) \
	__attribute__((section(".modinfo"), used, aligned(1))) static const char name[] = s

MODINFO(license, "license=GPL");
MODINFO(version, "version=0.1.0");
MODINFO(vermagic, "vermagic=6.1.0-56-cloud-amd64 SMP mod_unload modversions ");
MODINFO(name, "name=filewatcher");
