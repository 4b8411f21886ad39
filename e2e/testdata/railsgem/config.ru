# A single-file Rails application that decides itself, with the asyncreply
# gem of clients/rails, which requests become asynchronous: the gateway in
# front of it needs no --async route. It has the session login of
# ../rails/config.ru (Rails' encrypted cookie store, which re-issues the
# session cookie, with a new value, on every response that reads the
# session) and a current_user, and one action for each way the gem defers:
#
#   GET  /reports/:id         respond_to_async: every first arrival is deferred
#   GET  /pages/:id?slow=1    render "show", async: …, decided per request
#   GET  /exports/:id         deferred, and reports its progress as it works
#   POST /uploads             async_defer!, then echoes the request's body
#
# Written for Debian's ruby-rails (Rails 6.1).
#
#   puma -b tcp://127.0.0.1:3000 config.ru
require "action_controller/railtie"
require "action_view/testing/resolvers"

$LOAD_PATH.unshift File.expand_path("../../../clients/rails/lib", __dir__)
require "asyncreply/rails"

class App < Rails::Application
  config.load_defaults 6.1
  config.root = __dir__
  config.secret_key_base = "asyncreply-e2e-gem-test-secret-key-base-not-a-real-secret-0123456789"
  config.eager_load = false
  config.consider_all_requests_local = true
  config.hosts.clear
  config.logger = Logger.new($stderr, level: :warn)
  config.session_store :cookie_store, key: "_e2e_session"
  # The templates live in this file (PagesController): there is no view
  # directory whose changes development mode would watch.
  config.action_view.cache_template_loading = true
  # Puma runs the app in development, whose default is :inline.
  config.asyncreply.adapter = :gateway

  routes.append do
    post "/login", to: "sessions#create"
    get "/whoami", to: "sessions#show"
    get "/ping", to: "sessions#ping"
    get "/reports/:id", to: "reports#show"
    get "/pages/:id", to: "pages#show"
    get "/exports/:id", to: "exports#show"
    post "/uploads", to: "uploads#create"
  end
end

# Initialized before the controllers are defined, so that
# ActionController::Base has the application's defaults and the gem's
# controller methods.
App.initialize!

class ApplicationController < ActionController::Base
  skip_forgery_protection
  helper_method :current_user

  private
    def current_user
      session[:user]
    end

    # Declared before respond_to_async, so that an anonymous request is
    # refused at once rather than deferred.
    def authenticate
      head :unauthorized unless current_user
    end
end

class SessionsController < ApplicationController
  def create
    session[:user] = params.require(:name)
    render plain: "logged in as #{session[:user]}\n"
  end

  def show
    return head(:unauthorized) unless current_user

    render plain: current_user
  end

  def ping
    render plain: "pong\n"
  end
end

# Slow, as the reports the gateway exists for are.
class ReportsController < ApplicationController
  before_action :authenticate
  respond_to_async :show

  def show
    sleep 1
    render plain: "Report #{params[:id]} for #{current_user}\n"
  end
end

# Slow only when asked: the template's summary is the expensive part, which
# a deferred request leaves to its replay.
class PagesController < ApplicationController
  before_action :authenticate
  prepend_view_path ActionView::FixtureResolver.new(
    "pages/show.html.erb" => "Page <%= params[:id] %> for <%= current_user %>: <%= summary %>\n",
  )
  helper_method :summary

  def show
    render "show", async: params[:slow] == "1"
  end

  private
    def summary
      sleep 1 if params[:slow] == "1"
      async_replay? ? "rendered on the replay" : "rendered at once"
    end
end

# Reports how far it has got at every step, for the client polling it.
class ExportsController < ApplicationController
  STEPS = 4

  before_action :authenticate
  respond_to_async :show

  def show
    (1..STEPS).each do |step|
      async_progress(step * 100 / (STEPS + 1), "step #{step} of #{STEPS}")
      sleep 0.25
    end
    render plain: "Export #{params[:id]} for #{current_user}\n"
  end
end

# Echoes the request's body, byte for byte, on the replay.
class UploadsController < ApplicationController
  before_action :authenticate

  def create
    return if async_defer!

    send_data request.raw_post, type: request.content_type, disposition: :inline
  end
end

run App
