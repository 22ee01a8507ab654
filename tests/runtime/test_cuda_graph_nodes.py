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
