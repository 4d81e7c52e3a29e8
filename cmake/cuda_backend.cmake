# CUDA backend: the dispatcher, the Ampere-class (sm80) path and the Hopper (sm90a) path.
# Included from the top-level CMakeLists when FLASH_ATTN_CUDA is ON. Builds without a GPU.
enable_language(CUDA)
find_package(CUDAToolkit REQUIRED)

# CUTLASS/CuTe headers: -DCUTLASS_INCLUDE_DIR=... or the nvidia-cutlass wheel of the build's Python.
if(NOT CUTLASS_INCLUDE_DIR)
  find_package(Python 3.9 COMPONENTS Interpreter)
  if(Python_Interpreter_FOUND)
    execute_process(
      COMMAND ${Python_EXECUTABLE} -c
        "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
      OUTPUT_VARIABLE _cutlass_inc OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(EXISTS "${_cutlass_inc}/cute/tensor.hpp")
      set(CUTLASS_INCLUDE_DIR "${_cutlass_inc}" CACHE PATH "" FORCE)
    endif()
  endif()
endif()
if(NOT EXISTS "${CUTLASS_INCLUDE_DIR}/cute/tensor.hpp")
  message(FATAL_ERROR "CUTLASS/CuTe headers not found: pip install nvidia-cutlass==4.2.0.0 "
                      "or pass -DCUTLASS_INCLUDE_DIR=<dir containing cute/ and cutlass/>")
endif()
message(STATUS "flash_attn: CUTLASS headers in ${CUTLASS_INCLUDE_DIR}")

# Keep only the instantiation files (<kind>_hdim<D>_<dtype>.cu) that the filters allow.
function(flash_filter_instantiations out_var)
  set(kept "")
  foreach(f ${ARGN})
    get_filename_component(name ${f} NAME_WE)
    if(name IN_LIST FLASH_ATTN_EXTRA_INSTANTIATIONS)
      list(APPEND kept ${f})
      continue()
    endif()
    if(name MATCHES "_hdim([0-9]+)_(fp16|bf16)")
      set(hd ${CMAKE_MATCH_1})
      set(dt ${CMAKE_MATCH_2})
      if(NOT FLASH_ATTN_HDIMS STREQUAL "all" AND NOT hd IN_LIST FLASH_ATTN_HDIMS)
        continue()
      endif()
      if(NOT dt IN_LIST FLASH_ATTN_DTYPES)
        continue()
      endif()
    endif()
    list(APPEND kept ${f})
  endforeach()
  set(${out_var} ${kept} PARENT_SCOPE)
endfunction()

# Compile definitions telling the launch code which instantiations exist:
# FLASH_HDIM_<D>_ENABLED, FLASH_FP16_ENABLED, FLASH_BF16_ENABLED.
set(FLASH_INSTANTIATION_DEFS "")
foreach(hd 32 64 96 128 160 192 224 256)
  if(FLASH_ATTN_HDIMS STREQUAL "all" OR hd IN_LIST FLASH_ATTN_HDIMS)
    list(APPEND FLASH_INSTANTIATION_DEFS FLASH_HDIM_${hd}_ENABLED)
  endif()
endforeach()
foreach(dt fp16 bf16)
  if(dt IN_LIST FLASH_ATTN_DTYPES)
    string(TOUPPER ${dt} DT)
    list(APPEND FLASH_INSTANTIATION_DEFS FLASH_${DT}_ENABLED)
  endif()
endforeach()

set(FLASH_CUDA_FLAGS --expt-relaxed-constexpr --expt-extended-lambda --use_fast_math -lineinfo
    -Xcompiler=-fPIC)

function(flash_cuda_library target gencodes)
  add_library(${target} STATIC ${ARGN})
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES OFF POSITION_INDEPENDENT_CODE ON)
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/csrc
                             ${CUTLASS_INCLUDE_DIR})
  target_compile_definitions(${target} PRIVATE ${FLASH_INSTANTIATION_DEFS})
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${FLASH_CUDA_FLAGS} ${gencodes}>)
  target_link_libraries(${target} PUBLIC CUDA::cudart_static)
endfunction()

# Ampere-class path.
set(SM80_GENCODES "")
foreach(a ${FLASH_ATTN_SM80_ARCHS})
  list(APPEND SM80_GENCODES "-gencode=arch=compute_${a},code=sm_${a}")
endforeach()
file(GLOB SM80_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/cuda/sm80/*.cu)
file(GLOB SM80_INST CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/cuda/sm80/inst/*.cu
     ${PROJECT_SOURCE_DIR}/csrc/cuda/kvcache/inst/*.cu)
# The kvcache kernels use the same instructions and target the same architectures.
file(GLOB KVCACHE_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/cuda/kvcache/*.cu)
list(APPEND SM80_SOURCES ${KVCACHE_SOURCES})
# The rotary kernel is plain CUDA C++ and rides along with the same architectures.
file(GLOB ROTARY_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/rotary/*.cu)
list(APPEND SM80_SOURCES ${ROTARY_CUDA_SOURCES})
# So do the fused ops (cross-entropy, norms, the cuBLASLt GEMM, which dlopens libcublasLt).
file(GLOB OPS_CUDA_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/ops/cuda/*.cu)
list(APPEND SM80_SOURCES ${OPS_CUDA_SOURCES})
flash_filter_instantiations(SM80_INST ${SM80_INST})
flash_cuda_library(flash_attn_sm80 "${SM80_GENCODES}" ${SM80_SOURCES} ${SM80_INST})
target_link_libraries(flash_attn_sm80 PUBLIC ${CMAKE_DL_LIBS})

# Hopper path.
file(GLOB SM90_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/cuda/sm90/*.cu)
if(FLASH_ATTN_SM90 AND SM90_SOURCES)
  file(GLOB SM90_INST CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/cuda/sm90/inst/*.cu)
  flash_filter_instantiations(SM90_INST ${SM90_INST})
  flash_cuda_library(flash_attn_sm90 "-gencode=arch=compute_90a,code=sm_90a" ${SM90_SOURCES} ${SM90_INST})
  set(FLASH_HAVE_SM90 ON)
endif()

# Dispatcher (host C++ with the CUDA runtime headers).
file(GLOB CUDA_DISPATCH_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/csrc/cuda/*.cpp
     ${PROJECT_SOURCE_DIR}/csrc/cuda/*.cu)
add_library(flash_attn_cuda STATIC ${CUDA_DISPATCH_SOURCES})
set_target_properties(flash_attn_cuda PROPERTIES CUDA_ARCHITECTURES OFF POSITION_INDEPENDENT_CODE ON)
target_include_directories(flash_attn_cuda PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR}/csrc)
target_link_libraries(flash_attn_cuda PUBLIC flash_attn_sm80 CUDA::cudart_static)
if(FLASH_HAVE_SM90)
  target_link_libraries(flash_attn_cuda PUBLIC flash_attn_sm90)
  target_compile_definitions(flash_attn_cuda PRIVATE FLASH_ATTN_WITH_SM90)
endif()

target_link_libraries(flash_attn_core PUBLIC flash_attn_cuda)
target_compile_definitions(flash_attn_core PRIVATE FLASH_ATTN_WITH_CUDA)
