"""Triton kernels: the CUDA implementations written in Triton. Importing a module here imports triton;
under TRITON_INTERPRET=1 (set before triton is imported) the same kernels run on CPU tensors, which is
how CI tests them without a GPU."""
