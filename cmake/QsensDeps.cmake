# Finds every dependency the CMake way and prints one summary line.
# Targets made here: qsens::deps (everything the host code links), and, when the
# CUDA backend is on, CUDA::cudart, CUDA::cublasLt and qsens::nccl.

find_package(MPI REQUIRED COMPONENTS C)
find_package(HDF5 REQUIRED COMPONENTS C)
find_package(OpenMP REQUIRED COMPONENTS C)
find_package(PkgConfig REQUIRED)
pkg_check_modules(YAML REQUIRED IMPORTED_TARGET yaml-0.1)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(PCRE2 REQUIRED IMPORTED_TARGET libpcre2-8)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
pkg_check_modules(OPENBLAS REQUIRED IMPORTED_TARGET openblas)

add_library(qsens_deps INTERFACE)
add_library(qsens::deps ALIAS qsens_deps)
target_link_libraries(qsens_deps INTERFACE
  MPI::MPI_C OpenMP::OpenMP_C
  PkgConfig::YAML PkgConfig::JANSSON PkgConfig::PCRE2 PkgConfig::UTF8PROC PkgConfig::OPENBLAS
  ${HDF5_C_LIBRARIES} m)
target_include_directories(qsens_deps INTERFACE ${HDF5_C_INCLUDE_DIRS})
target_compile_definitions(qsens_deps INTERFACE ${HDF5_C_DEFINITIONS} PCRE2_CODE_UNIT_WIDTH=8)

# CUDA ------------------------------------------------------------------------
set(QSENS_HAVE_CUDA OFF)
set(_qsens_cuda_summary "off")
if(NOT QSENS_CUDA STREQUAL "OFF")
  if(NOT CMAKE_CUDA_COMPILER AND EXISTS /usr/local/cuda/bin/nvcc)
    set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc)
  endif()
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(CMAKE_CUDA_ARCHITECTURES ${QSENS_CUDA_ARCHS})
    enable_language(CUDA)
    find_package(CUDAToolkit REQUIRED)
    find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
    find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
    if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
      add_library(qsens::nccl UNKNOWN IMPORTED)
      set_target_properties(qsens::nccl PROPERTIES IMPORTED_LOCATION ${NCCL_LIBRARY}
                            INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
      set(QSENS_HAVE_CUDA ON)
      set(_qsens_cuda_summary "CUDA ${CUDAToolkit_VERSION} (sm ${QSENS_CUDA_ARCHS}), cuBLASLt, NCCL")
    elseif(QSENS_CUDA STREQUAL "ON")
      message(FATAL_ERROR "QSENS_CUDA=ON but NCCL (nccl.h, libnccl) was not found")
    else()
      set(_qsens_cuda_summary "off (nvcc found, NCCL missing)")
    endif()
  elseif(QSENS_CUDA STREQUAL "ON")
    message(FATAL_ERROR "QSENS_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    set(_qsens_cuda_summary "off (no nvcc)")
  endif()
endif()

message(STATUS "qsens deps: MPI ${MPI_C_VERSION}, HDF5 ${HDF5_VERSION}, OpenMP ${OpenMP_C_VERSION}, "
               "yaml ${YAML_VERSION}, jansson ${JANSSON_VERSION}, pcre2 ${PCRE2_VERSION}, "
               "utf8proc ${UTF8PROC_VERSION}, OpenBLAS ${OPENBLAS_VERSION}; CUDA: ${_qsens_cuda_summary}")
