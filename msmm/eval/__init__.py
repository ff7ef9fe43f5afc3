"""``msmm-eval``: VLMEvalKit benchmark TSVs (AI2D, MMMU, ChartQA, DocVQA), each family's
VLMEvalKit prompts, answer extraction and metrics (framework-free: datasets, prompts, extract,
metrics, results, config), and the evaluation loop on msmm's generation (run, cli)."""
