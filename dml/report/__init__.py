"""The report over experiments: comparison tables (markdown and HTML from one source), the
HTML page, its matplotlib figures and the evaluate stage's retrieval grid.

Each module has one job; import a name from the module that defines it (this package
re-exports nothing, so that a stage importing the table code never imports matplotlib):

- :mod:`dml.report.blocks`: headings, tables and paragraphs, rendered as markdown or HTML;
- :mod:`dml.report.runs`: the evaluation files of the experiments, per seed, and their sections;
- :mod:`dml.report.columns`: which metric columns a table shows, their titles, headline figures;
- :mod:`dml.report.estimates`: a figure over seeds with its interval, and a table cell of it;
- :mod:`dml.report.comparison`: the comparison's sections and tables, as blocks;
- :mod:`dml.report.page`: the self-contained HTML page;
- :mod:`dml.report.drawing`: what the matplotlib drawings share (style, PNG bytes);
- :mod:`dml.report.figures`: the report's figures (bars, recall@K, training curves);
- :mod:`dml.report.grid`: the retrieval grid of a run's queries and their top results.
"""
