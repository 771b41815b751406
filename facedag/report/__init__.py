"""The run in pictures: figures for the stages and the HTML report."""
