"""Speed paths for the loaded model: C++ kernels, AMX and int8 ops, compiled packages, memory."""
