"""A Python application on the `vulkan` package (raw cffi `lib`), through the real loader: the
ICD has no Python in it, so it works inside any interpreter. Prints the devices it sees."""

from vulkan import ffi, lib

app = ffi.new("VkApplicationInfo *", {"sType": 0, "apiVersion": (1 << 22) | (1 << 12)})
info = ffi.new("VkInstanceCreateInfo *", {"sType": 1, "pApplicationInfo": app})
inst = ffi.new("VkInstance *")
assert lib.vkCreateInstance(info, ffi.NULL, inst) == 0
n = ffi.new("uint32_t *")
assert lib.vkEnumeratePhysicalDevices(inst[0], n, ffi.NULL) == 0
pds = ffi.new("VkPhysicalDevice[]", n[0])
lib.vkEnumeratePhysicalDevices(inst[0], n, pds)
props = ffi.new("VkPhysicalDeviceProperties *")
lib.vkGetPhysicalDeviceProperties(pds[0], props)
print("python app sees", n[0], "device(s):", ffi.string(props.deviceName).decode())
lib.vkDestroyInstance(inst[0], ffi.NULL)
