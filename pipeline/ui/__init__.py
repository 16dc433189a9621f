"""``xsam-pipeline ui``: a web page to place prompts on a frame, preview the masks, run a job and read its
results, and prompt live streams.

The page is plain HTML, JavaScript and CSS (``static/``), served with the JSON API below it by FastAPI:

* :mod:`~pipeline.ui.paths`: every path the browser sends, resolved inside ``--root`` or ``--out``;
* :mod:`~pipeline.ui.frames`: frame N of a source as JPEG, from the pipeline's readers, with a cache;
* :mod:`~pipeline.ui.prompts`: the page's prompts as the CLI's spec strings, parsed by the CLI's parser;
* :mod:`~pipeline.ui.overlay`: instances as a transparent PNG the page lays over the frame;
* :mod:`~pipeline.ui.jobs`: one ``run`` job at a time in a background thread, its progress and results;
* :mod:`~pipeline.ui.live`: the live service's HTTP API, relayed;
* :mod:`~pipeline.ui.server`: the FastAPI app and the ``ui`` subcommand.
"""
