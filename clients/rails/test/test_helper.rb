# frozen_string_literal: true

# A tiny Rails application for the gem's tests, in the manner of Rails'
# bug-report templates: a cookie-store session with a login and a
# current_user, and controllers that use every controller method the gem
# adds. Its templates are under app/views beside this file.
ENV["RAILS_ENV"] = "test"

require "action_controller/railtie"
require "asyncreply/rails"

class TestApp < Rails::Application
  config.load_defaults 6.1
  config.root = __dir__
  config.eager_load = false
  config.hosts.clear
  config.logger = Logger.new(nil)
  config.secret_key_base = "asyncreply-rails-test-secret-key-base-not-a-real-secret"
  config.session_store :cookie_store, key: "_test_app_session"
  config.action_controller.allow_forgery_protection = false
  config.action_dispatch.show_exceptions = false

  routes.append do
    post "/session", to: "sessions#create"
    resources :exports, only: %i[index create]
    resources :progress_reports, only: :create
    resources :archives, only: :show
    resources :backups, only: %i[index show]
    resources :reports, only: :show do
      member do
        get :page, :page_async_false, :summary, :created, :custom, :explicit, :replay_state
      end
    end
    namespace :api do
      resources :jobs, only: :create
    end
  end
end

TestApp.initialize!

require "rails/test_help"

# The headers of a request the gateway forwards as a first arrival.
GATEWAY_FIRST_ARRIVAL = { "Asyncreply-Deferrable" => "1" }.freeze

class ApplicationController < ActionController::Base
  private
    def current_user
      session[:user]
    end
end

class SessionsController < ApplicationController
  def create
    session[:user] = params.require(:user)
    head :no_content
  end
end

# Deferred with the operation's settings; reports progress when replayed.
class ExportsController < ApplicationController
  respond_to_async :create, timeout: 1.hour, retention: 1.week, wait: 2

  def index
    render json: { replay: async_replay? }
  end

  def create
    async_progress(40, "Exporting")
    render json: { user: current_user, kind: params[:kind], replay: async_replay?, operation: async_operation_id },
      status: :created
  end
end

# Reports each progress it is given, as it is given.
class ProgressReportsController < ApplicationController
  def create
    params.require(:reports).each { |report| async_progress(report[:percent], report[:message]) }
    head :no_content
  end
end

# Deferred only for large archives, unless previewed.
class ArchivesController < ApplicationController
  respond_to_async :show, if: :large?, unless: -> { params[:preview] == "1" }

  def show
    render plain: "archive #{params[:id]}"
  end

  private
    def large?
      params[:id].to_i > 100
    end
end

# Every action deferred.
class BackupsController < ApplicationController
  respond_to_async

  def index
    render plain: "backups"
  end

  def show
    render plain: "backup #{params[:id]}"
  end
end

Report = Struct.new(:id, :title, :slow, keyword_init: true) do
  def self.find(id)
    REPORTS.fetch(id)
  end

  def slow?
    slow
  end
end

REPORTS = {
  "1" => Report.new(id: "1", title: "Weekly sales", slow: false),
  "2" => Report.new(id: "2", title: "Ten years of sales", slow: true),
}.freeze

# Decides per report with render's async: option, or async_defer!.
class ReportsController < ApplicationController
  before_action { @report = Report.find(params[:id]) }

  def show
    render json: @report, async: @report.slow?
  end

  def page
    render "show"
  end

  def page_async_false
    render "show", async: false
  end

  def summary
    render async: @report.slow?
  end

  def created
    render json: @report, status: :created, async: false
  end

  def custom
    render plain: "custom", async: { timeout: 60, wait: 0 }
  end

  def explicit
    return if async_defer!(retention: 1.day)

    render plain: "explicit #{@report.title}"
  end

  def replay_state
    render inline: "<%= async_replay? %> <%= async_operation_id.inspect %>"
  end
end

module Api
  class JobsController < ActionController::API
    respond_to_async :create

    def create
      render json: { replay: async_replay? }, status: :created
    end
  end
end
