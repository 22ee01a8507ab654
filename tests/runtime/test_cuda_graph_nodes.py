"""``node_counts``: the launches of a captured CUDA graph, tallied from its DOT dump (here a
dump written by hand in the layout of ``cudaGraphDebugDotPrint``; tests/gpu checks a real
one)."""

from __future__ import annotations

from dtrain.runtime.cuda_graph import node_counts

DOT = r"""digraph dot {
subgraph cluster_1 {
label="graph_1" graph[style="dashed"];
"graph_1_node_0"[style="solid" shape="rectangle" label="0
void cupy_multiply__float_float_float(CIndexer<1>, float*)
\<\<\<4,1,1\>\>\>
"];

"graph_1_node_1"[style="solid" shape="record" label="{MEMSET
| {{ID | node handle} | {1 | 0x1}}}"];
"graph_1_node_2"[shape="rectangle" label="2\nvoid layer_norm_forward<float>(const float*)\n"];
"graph_1_node_3"[style="solid" shape="rectangle" label="3
void cupy_multiply__float_float_float(CIndexer<1>, float*)
"];
"graph_1_node_0" -> "graph_1_node_1";
"graph_1_node_1" -> "graph_1_node_2";
}
}"""


def test_nodes_are_counted_by_kernel_name():
    counts = node_counts(DOT)
    assert counts == {"cupy_multiply__float_float_float": 2, "MEMSET": 1, "layer_norm_forward": 1}


def test_edges_and_empty_dumps_count_nothing():
    assert node_counts('digraph dot {\n"graph_1_node_0" -> "graph_1_node_1";\n}') == {}
    assert node_counts("") == {}


# The verbose layout (cudaGraphDebugDotFlagsVerbose, which torch's debug_dump writes), as
# CUDA 12.8 prints it: record labels, the kernel's mangled name in the ID field, and edges
# with a headlabel (a regex not anchored to the line's start counted those as nodes).
VERBOSE = r"""digraph dot {
subgraph cluster_1 {
label="graph_1" graph[style="dashed"];
"graph_1_node_0"[style="bold" shape="record" label="{KERNEL
| {ID | 0 (topoId: 3) | _ZN2at6native29vectorized_elementwise_kernelILi4EEEvi\<\<\<1,128,0\>\>\>}
| {{node handle | func handle} | {0x000055E7277A5C20 | 0x000055E7270A5A90}}
| {cooperative | 0}
}"];
"graph_1_node_1"[style="bold" shape="record" label="{KERNEL
| {ID | 1 (topoId: 2) | _Z18layer_norm_forwardIfEvPKT_S2_PS0_x\<\<\<8,32,0\>\>\>}
| {cooperative | 0}
}"];
"graph_1_node_2"[style="solid" shape="record" label="{
MEMCPY
| {{ID | node handle} | {2 (topoId: 1) | 0x000055E7277A6AC0}}
| {kind | DtoD (DEVICE to DEVICE)}
}"];
"graph_1_node_0" -> "graph_1_node_1" [headlabel=0];
"graph_1_node_1" -> "graph_1_node_2" [headlabel=0];
}
}"""


def test_verbose_records_are_counted_by_demangled_kernel_name_and_edges_are_not_nodes():
    counts = node_counts(VERBOSE)
    assert counts == {
        "at::native::vectorized_elementwise_kernel": 1,
        "layer_norm_forward": 1,
        "MEMCPY": 1,
    }
    with_headlabels = DOT.replace(
        '";\n"graph_1_node_1" -> ', '" [headlabel=0];\n"graph_1_node_1" -> '
    )
    assert sum(node_counts(with_headlabels).values()) == 4


def test_demangling_never_fails():
    from dtrain.runtime.cuda_graph import _demangled

    assert _demangled("_ZL13static_kernelPf") == "static_kernel"
    assert _demangled("_ZN3cub6detail6reduceIfEEvv") == "cub::detail::reduce"
    for odd in ("", "_Z", "_ZN", "_Z\u00b2x", "_Z" + "9" * 5000, "_Z99short", "plain_name"):
        assert isinstance(_demangled(odd), str)
    indented = VERBOSE.replace('\n"graph_1_node_2"', '\n  "graph_1_node_2"')
    assert sum(node_counts(indented).values()) == 3


def test_rectangles_labelled_with_a_mangled_symbol_count_by_its_name():
    # The layout the H100's CUDA 13 printed (2026-11-28): the node number, then the symbol.
    dot = (
        'digraph dot {\n"graph_1_node_0"[shape="rectangle" label="0\n'
        '_Z18layer_norm_forwardIfEvPKT_S2_S2_iiPS0_PN3AccIS0_E4typeES7_xxd\n"];\n'
        '"graph_1_node_1"[shape="rectangle" label="1\n'
        '_ZN8cublasLt8epilogue4impl22globalKernelBgradAB_v1ILi8ELi64EfffEEviiiPKT1_iPT2_ll\n"];\n}'
    )
    assert node_counts(dot) == {
        "layer_norm_forward": 1,
        "cublasLt::epilogue::impl::globalKernelBgradAB_v1": 1,
    }
