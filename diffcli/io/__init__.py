"""Files diffcli writes: atomic writes, sample files, PNG grids and plots, JSON reports."""
