"""Inside CaImAn (row 4): the batch hook and :func:`align_classes`, the OnACID screen."""
