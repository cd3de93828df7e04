import Config

config :hello_elixir, port: 8080
