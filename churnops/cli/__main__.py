from churnops.cli import app

app()
