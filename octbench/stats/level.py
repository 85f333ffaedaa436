"""The significance level of every verdict octbench gives (the ▲/▼ marks, the exports' †, the summary's "differs",
the detectable differences and the critical differences), named once."""

ALPHA = 0.05
