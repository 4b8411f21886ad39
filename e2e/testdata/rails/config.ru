# A single-file Rails application for the gateway's end-to-end tests: session
# login through Rails' default encrypted cookie store (which re-issues the
# session cookie, with a new value, on every response that touches the
# session), a slow action that renders the current user's name, a "who am I"
# endpoint and a fast route. Written for Debian's ruby-rails (Rails 6.1).
#
#   puma -b tcp://127.0.0.1:3000 config.ru
require "action_controller/railtie"

class App < Rails::Application
  config.load_defaults 6.1
  config.root = __dir__
  config.secret_key_base = "asyncreply-e2e-test-secret-key-base-not-a-real-secret-0123456789"
  config.eager_load = false
  config.consider_all_requests_local = true
  config.hosts.clear
  config.logger = Logger.new($stderr, level: :warn)
  config.session_store :cookie_store, key: "_e2e_session"

  routes.append do
    post "/login", to: "app#login"
    get "/reports/:id", to: "app#report"
    get "/whoami", to: "app#whoami"
    get "/ping", to: "app#ping"
  end
end

# Initialized before the controller is defined, so that ActionController::Base
# has the application's defaults (forgery protection among them).
App.initialize!

class AppController < ActionController::Base
  skip_forgery_protection

  def login
    session[:user] = params.require(:name)
    render plain: "logged in as #{session[:user]}\n"
  end

  # Slow, as the reports the gateway exists for are.
  def report
    return head(:unauthorized) unless session[:user]
    sleep 1
    render plain: "Report #{params[:id]} for #{session[:user]}\n"
  end

  def whoami
    return head(:unauthorized) unless session[:user]
    render plain: session[:user]
  end

  def ping
    render plain: "pong\n"
  end
end

run App
