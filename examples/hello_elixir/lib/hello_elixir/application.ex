defmodule HelloElixir.Application do
  @moduledoc "Starts the inets HTTP listener that the unibeam tests talk to."
  use Application
  require Logger

  @impl true
  def start(_type, _args) do
    port = Application.get_env(:hello_elixir, :port, 8080)
    {:ok, sup} = Supervisor.start_link([], strategy: :one_for_one, name: HelloElixir.Supervisor)

    # inets owns the listener; we only hand it our request module.
    {:ok, _httpd} =
      :inets.start(:httpd,
        port: port,
        bind_address: :any,
        server_name: ~c"hello_elixir",
        server_root: ~c"/tmp",
        document_root: ~c"/tmp",
        modules: [HelloElixir.Web]
      )

    Logger.notice("hello_elixir listening on port #{port}")
    {:ok, sup}
  end
end
